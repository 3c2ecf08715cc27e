"""Audio that arrives in pieces -> mono float32 at the model's rate, sample for sample what
`emo_rt.io.audio` makes of the whole file (channels averaged, then scipy's `resample_poly`)."""

from __future__ import annotations

import math

import numpy as np

from emo_rt.errors import InputError


def mono_piece(piece: np.ndarray) -> np.ndarray:
    """One piece of a stream, (n,) or (n, C) -> (n,) float32, channels averaged as `load_inputs` does."""
    samples = np.asarray(piece, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    if samples.ndim != 1:
        raise InputError(f"an audio piece must be (samples,) or (samples, channels), got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise InputError("the audio stream contains NaN or infinite samples")
    return samples


class StreamResampler:
    """`resample_poly(whole, up, down)` computed piece by piece: each output sample is emitted once
    every input its filter reaches has arrived, from the same inputs in the same order, so the
    concatenated outputs equal the whole file's resampled bit for bit (tested).

        resampler = StreamResampler(44100, 16000)
        for piece in pieces:
            out = resampler.push(piece)      # (k,) float32, k >= 0
        tail = resampler.flush()             # the rest, once the stream has ended
    """

    def __init__(self, from_rate: int, to_rate: int):
        g = math.gcd(from_rate, to_rate)
        self.up, self.down = to_rate // g, from_rate // g
        half_len = 10 * max(self.up, self.down)  # resample_poly's filter: 2 * half_len + 1 taps at the up rate
        # inputs an output sample reaches on each side, with room for resample_poly's padding of the filter
        self._reach = (half_len + 2 * self.down) // self.up + 2
        self._buffer = np.zeros(0, np.float32)  # inputs from sample self._first on
        self._first = 0  # a multiple of `down`: the buffer's outputs then start on the whole file's grid
        self._received = 0
        self._emitted = 0

    def _resampled(self, stop: int) -> np.ndarray:
        """Outputs [self._emitted, stop) of the whole file, computed from the buffered inputs."""
        from scipy.signal import resample_poly

        offset = self._first * self.up // self.down  # the whole file's index of the buffer's first output
        out = resample_poly(self._buffer, self.up, self.down)[self._emitted - offset: stop - offset]
        self._emitted = stop
        return out.astype(np.float32, copy=False)

    def push(self, samples: np.ndarray) -> np.ndarray:
        self._buffer = np.concatenate([self._buffer, samples])
        self._received += samples.size
        ready = max(0, (self._received - self._reach) * self.up // self.down)  # outputs whose inputs all arrived
        if ready <= self._emitted:
            return np.zeros(0, np.float32)
        out = self._resampled(ready)
        # keep what the next outputs reach back to, from a multiple of `down`
        first = max(0, (self._emitted * self.down // self.up - self._reach) // self.down * self.down)
        if first > self._first:
            self._buffer = self._buffer[first - self._first:]
            self._first = first
        return out

    def flush(self) -> np.ndarray:
        """The outputs still due once the stream has ended (its end padded with zeros, as resample_poly's)."""
        total = -(-self._received * self.up // self.down)  # resample_poly's output length
        if total <= self._emitted:
            return np.zeros(0, np.float32)
        return self._resampled(total)
