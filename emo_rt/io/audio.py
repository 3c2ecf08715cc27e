"""Audio in: wav, flac, mp3, m4a/aac, ogg (any rate, any channels) -> mono float32 at one rate.

Decoding is soundfile or PyAV; resampling is scipy's polyphase `resample_poly` (Kaiser-windowed FIR).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from emo_rt.errors import InputError
from emo_rt.io.files import check_input_file

SILENCE_PEAK_DBFS = -60.0  # peak below this (0.001 of full scale) counts as silence
LIBSNDFILE_CONTAINERS = ("wav", "flac", "ogg", "aiff")  # decoded by soundfile; the rest by PyAV


def as_fraction(fps: int | float | Fraction) -> Fraction:
    """fps as an exact fraction: 25 -> 25, 29.97 -> 2997/100 (the decimal meant, not the binary float)."""
    if isinstance(fps, Fraction):
        out = fps
    elif isinstance(fps, float):
        out = Fraction(repr(fps))
    else:
        out = Fraction(int(fps))
    if out <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return out


def num_video_frames(num_samples: int, sample_rate: int, fps: int | float | Fraction) -> int:
    """Frames that cover the audio: ceil(num_samples / sample_rate * fps), in integer maths."""
    rate = as_fraction(fps)
    # ceil(a / b) == -((-a) // b) for integers, b > 0
    return -((-num_samples * rate.numerator) // (sample_rate * rate.denominator))


def sniff_container(path: str | os.PathLike[str]) -> str | None:
    """Name the container from its magic bytes when libsndfile reads it ("wav", "flac", ...), else None."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    return None


def decode_audio(path: str | os.PathLike[str], channels: bool = False) -> tuple[np.ndarray, int]:
    """Decode at the file's own rate, channels averaged to mono (`channels`: kept, (T, C)).

    wav/flac/ogg/aiff go through soundfile (libsndfile: exact lengths, the decoder DALI uses);
    everything else (mp3, m4a/aac, ...) through PyAV. Returns (samples (T,) float32, sample_rate).
    Raises InputError for anything that is not a readable, decodable audio file.
    """
    path = check_input_file(path, "audio")
    if sniff_container(path) in LIBSNDFILE_CONTAINERS:
        samples, sample_rate = _decode_soundfile(path)
    else:
        samples, sample_rate = _decode_pyav(path)
    if samples.size == 0:
        raise InputError(f"audio file has no samples (zero length): {path}")
    return (samples if channels else samples.mean(axis=1, dtype=np.float32)), sample_rate


def _decode_soundfile(path: Path) -> tuple[np.ndarray, int]:
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except sf.SoundFileError as e:
        raise InputError(f"audio file is corrupt or unsupported: {path} ({e})") from e
    return data, int(sample_rate)


def _decode_pyav(path: Path) -> tuple[np.ndarray, int]:
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise InputError(f"not an audio file that can be decoded: {path} ({e.strerror or e})") from e
    chunks: list[np.ndarray] = []  # each (n, C) float32
    with container:
        if not container.streams.audio:
            raise InputError(f"no audio stream in {path}: give a wav, flac, mp3, m4a/aac or ogg file")
        stream = container.streams.audio[0]
        sample_rate = stream.codec_context.sample_rate
        # Format conversion only (rate and layout kept): every sample format -> planar float32.
        to_float = av.AudioResampler(format="fltp")
        try:
            for frame in container.decode(stream):
                sample_rate = frame.sample_rate
                for converted in to_float.resample(frame):
                    chunks.append(converted.to_ndarray().T)  # planar (C, n) -> (n, C)
            for converted in to_float.resample(None):
                chunks.append(converted.to_ndarray().T)
        except av.error.FFmpegError as e:
            raise InputError(f"audio file is corrupt or truncated: {path} ({e.strerror or e})") from e
        declared = _declared_num_samples(stream, sample_rate)
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros((0, 1), np.float32)
    if declared is not None and 0 < declared < samples.size:
        # AAC decoders return the encoder's end padding; the container's duration says where it ends.
        samples = samples[:declared]
    if not sample_rate:
        raise InputError(f"audio file has no sample rate: {path}")
    return samples, int(sample_rate)


def _declared_num_samples(stream: av.audio.stream.AudioStream, sample_rate: int) -> int | None:
    if not stream.duration or stream.time_base is None or not sample_rate:
        return None
    return round(stream.duration * stream.time_base * sample_rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (T,) -> (ceil(T * to_rate / from_rate),) float32."""
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import (
        resample_poly,  # imported here: scipy.signal takes seconds to import
    )

    g = math.gcd(from_rate, to_rate)
    return resample_poly(samples, to_rate // g, from_rate // g).astype(np.float32)


def check_duration(num_samples: int, sample_rate: int, min_seconds: float, path: object) -> None:
    """Raise InputError when the audio is shorter than `min_seconds` (e.g. one video frame, 1/fps)."""
    if num_samples == 0:
        raise InputError(f"audio file has no samples (zero length): {path}")
    if num_samples < math.ceil(min_seconds * sample_rate - 1e-9):
        raise InputError(
            f"audio is too short: {path} lasts {num_samples / sample_rate:.3f} s, "
            f"at least {min_seconds:.3f} s (one video frame) is needed"
        )


def load_audio(
    path: str | os.PathLike[str], sample_rate: int = 16000, *, min_seconds: float = 0.0
) -> np.ndarray:
    """Load any audio file as mono float32 (T,) at `sample_rate`.

    `min_seconds`: shortest accepted duration; pass 1 / fps to refuse audio shorter than a frame.
    """
    samples, native_rate = decode_audio(path)
    check_duration(samples.size, native_rate, min_seconds, path)
    if not np.isfinite(samples).all():
        raise InputError(f"audio file contains NaN or infinite samples: {path}")
    return resample(samples, native_rate, sample_rate)


def is_silent(samples: np.ndarray, threshold_dbfs: float = SILENCE_PEAK_DBFS) -> bool:
    """True when no sample's magnitude reaches `threshold_dbfs` (the caller warns; silence is allowed)."""
    if samples.size == 0:
        return True
    peak = float(np.max(np.abs(samples)))
    return peak < 10.0 ** (threshold_dbfs / 20.0)
