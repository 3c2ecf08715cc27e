"""Prosody row: per-frame pitch, voicing and loudness of a waveform, with no weights.

Expressions that follow the voice (brows rising on pitch peaks) need the pitch relative to the
speaker's own range. A small wav2vec2 at random init carries loudness (the mouth follows it) but
little pitch, so when `AudioConfig.prosody` is on the audio encoder appends one more row to its
stacked features: three per-frame values, Fourier-encoded to the row's width so the projector's
first layer can read them non-linearly:

- pitch: F0 in semitones from the median F0 of the voiced frames of the encoded audio, / 6;
- voicing: the normalised autocorrelation peak (0 silence/noise .. 1 periodic), 0 when unvoiced;
- loudness: frame RMS over the 90th percentile of the audio's voiced-or-loud frames, clipped to 2.

F0 uses the normalised autocorrelation of a 64 ms Hann window centred on each frame (lags for
65-420 Hz). It runs in torch on the host in every backend (FFT-based, cheap: ~2 ms per second of
audio on one CPU core), so the exported wav2vec2 engine stays free of DFT ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NUM_VALUES = 3  # pitch, voicing, loudness
MIN_HZ, MAX_HZ = 65.0, 420.0
WINDOW_SECONDS = 0.064
VOICED_STRENGTH = 0.45  # autocorrelation peak above which a loud frame counts as voiced


def frame_windows(waveform: torch.Tensor, num_frames: int, window: int) -> torch.Tensor:
    """(B, S) -> (B, F, window): Hann-weighted windows centred on each video frame's centre."""
    b, s = waveform.shape
    hop = s / num_frames
    padded = F.pad(waveform, (window // 2, window // 2))
    centres = ((torch.arange(num_frames, device=waveform.device) + 0.5) * hop).long().clamp(0, s - 1)
    index = centres[:, None] + torch.arange(window, device=waveform.device)  # (F, window), in padded
    hann = torch.hann_window(window, periodic=False, device=waveform.device, dtype=waveform.dtype)
    return padded[:, index] * hann


def prosody_values(waveform: torch.Tensor, num_frames: int, sample_rate: int) -> torch.Tensor:
    """(B, S) waveform -> (B, F, 3): pitch (semitones from the voiced median / 6), voicing, loudness."""
    window = int(round(WINDOW_SECONDS * sample_rate))
    segs = frame_windows(waveform.float(), num_frames, window)  # (B, F, W)
    spectrum = torch.fft.rfft(segs, n=2 * window)
    autocorr = torch.fft.irfft(spectrum.abs() ** 2, n=2 * window)[..., :window]  # (B, F, W)
    lo, hi = int(sample_rate // MAX_HZ), int(sample_rate // MIN_HZ)
    peak, lag = autocorr[..., lo:hi].max(dim=-1)
    strength = peak / autocorr[..., 0].clamp_min(1e-12)  # (B, F)

    rms = segs.pow(2).mean(-1).sqrt()
    loud = rms > 0.05 * rms.amax(-1, keepdim=True).clamp_min(1e-12)
    voiced = loud & (strength > VOICED_STRENGTH)
    f0 = sample_rate / (lag + lo).float()

    pitch = torch.zeros_like(f0)
    level = torch.ones(f0.shape[0], 1, dtype=f0.dtype, device=f0.device)
    for i in range(f0.shape[0]):  # per item: its own voiced median and loudness reference
        if voiced[i].sum() >= 3:
            median = f0[i][voiced[i]].median()
            pitch[i] = torch.where(voiced[i], 12 * torch.log2(f0[i] / median), 0.0)
        if loud[i].any():
            level[i] = torch.quantile(rms[i][loud[i]], 0.9).clamp_min(1e-12)
    loudness = (rms / level).clamp(0, 2)
    return torch.stack([pitch / 6, strength.clamp(0, 1) * voiced, loudness], dim=-1)


def fourier_encode(values: torch.Tensor, width: int) -> torch.Tensor:
    """(..., V) -> (..., width): each value v as [v, sin(k v), cos(k v) for k = 1..K], zero padded."""
    per_value = width // values.shape[-1]
    k = torch.arange(1, (per_value - 1) // 2 + 1, device=values.device, dtype=values.dtype) * (math.pi / 2)
    angles = values[..., None] * k  # (..., V, K)
    parts = torch.cat([values[..., None], angles.sin(), angles.cos()], dim=-1)  # (..., V, 1 + 2K)
    flat = parts.flatten(-2)
    return F.pad(flat, (0, width - flat.shape[-1]))


def prosody_row(waveform: torch.Tensor, num_frames: int, sample_rate: int, width: int) -> torch.Tensor:
    """(B, S) -> (B, F, 1, width): the prosody row stacked after the wav2vec2 layers."""
    if width < 3 * NUM_VALUES:
        raise ValueError(f"the prosody row needs a width of at least {3 * NUM_VALUES}, got {width}")
    values = prosody_values(waveform, num_frames, sample_rate)
    return fourier_encode(values, width)[:, :, None].to(waveform.dtype)
