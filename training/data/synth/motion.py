"""Per-frame face motion of a clip: mouth and brows from the audio, head pose, blinks and gaze from
seeded smooth noise whose speed follows the clip's speed level.

Frame t shows the audio samples [t * spf, (t + 1) * spf), spf = sample_rate / fps (640 at 16 kHz and
25 fps); `frame_rms` is the envelope the mouth follows, on exactly that grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from emo_rt.pose import head_speed

from .face import Expression, Pose

# mean head speed (degrees per frame) at speed level 0 and 1, and the pose limits (degrees)
SPEED_STILL = 0.04
SPEED_LIVELY = 1.4
POSE_LIMITS = np.array([28.0, 18.0, 14.0])   # yaw, pitch, roll


@dataclass(frozen=True)
class AudioFeatures:
    rms: np.ndarray        # (T,) RMS of each frame's samples
    centroid: np.ndarray   # (T,) spectral centroid, Hz (0 where silent)
    f0: np.ndarray         # (T,) fundamental frequency, Hz (0 where unvoiced)


@dataclass(frozen=True)
class Motion:
    mouth_open: np.ndarray   # (T,) 0..1
    mouth_width: np.ndarray  # (T,) relative lip width, 1 = neutral
    brow_raise: np.ndarray   # (T,) 0..1
    blink: np.ndarray        # (T,) 0 open .. 1 closed
    pose: np.ndarray         # (T, 3) yaw, pitch, roll in degrees
    translation: np.ndarray  # (T, 2) head shift, fraction of the frame size
    gaze: np.ndarray         # (T, 2) -1..1
    head_speed: np.ndarray   # (T,) degrees per frame

    def __len__(self) -> int:
        return len(self.mouth_open)

    def frame(self, t: int) -> tuple[Pose, Expression]:
        yaw, pitch, roll = (float(v) for v in self.pose[t])
        pose = Pose(yaw, pitch, roll, float(self.translation[t, 0]), float(self.translation[t, 1]))
        expr = Expression(float(self.mouth_open[t]), float(self.mouth_width[t]), float(self.brow_raise[t]),
                          float(self.blink[t]), float(self.gaze[t, 0]), float(self.gaze[t, 1]))
        return pose, expr


def frame_rms(wave: np.ndarray, samples_per_frame: int) -> np.ndarray:
    """(T,) RMS of each frame's samples; len(wave) must be a multiple of samples_per_frame."""
    frames = wave.reshape(-1, samples_per_frame).astype(np.float64)
    return np.sqrt(np.mean(frames * frames, axis=1))


def audio_features(wave: np.ndarray, sample_rate: int, fps: int) -> AudioFeatures:
    spf = sample_rate // fps
    rms = frame_rms(wave, spf)
    n = len(rms)
    loud = rms > 0.08 * _reference_level(rms)
    # spectral centroid of each frame (Hann window), 80 Hz .. 5 kHz
    frames = wave.reshape(n, spf).astype(np.float64) * np.hanning(spf)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(spf, 1 / sample_rate)
    band = (freqs > 80) & (freqs < 5000)
    centroid = (power[:, band] @ freqs[band]) / np.maximum(power[:, band].sum(1), 1e-12)
    centroid = np.where(loud, centroid, 0.0)
    # F0 by normalised autocorrelation over a 64 ms window centred on each frame
    win = 1024
    pad = np.pad(wave.astype(np.float64), (win // 2, win // 2))
    centres = (np.arange(n) * spf + spf // 2)
    idx = centres[:, None] + np.arange(win)[None, :]
    segs = pad[idx] * np.hanning(win)
    spec = np.fft.rfft(segs, 2 * win, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :win]
    lo, hi = sample_rate // 420, sample_rate // 65
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(n), lag] / np.maximum(ac[:, 0], 1e-12)
    f0 = np.where(loud & (strength > 0.45), sample_rate / lag, 0.0)
    return AudioFeatures(rms, centroid, f0)


def _reference_level(rms: np.ndarray) -> float:
    """A clip's speech level: the 90th percentile of frame RMS over frames above 5% of the peak."""
    peak = float(rms.max())
    if peak <= 0:
        return 1.0
    return float(np.percentile(rms[rms > 0.05 * peak], 90))


def mouth_curves(feat: AudioFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Mouth opening follows the RMS envelope (gated to 0 in silence, opening up to 2 frames early);
    lip width follows the spectral centroid (bright sounds spread, dark ones round)."""
    ref = _reference_level(feat.rms)
    level = feat.rms / ref
    level = np.where(level < 0.08, 0.0, level)          # noise gate: silence keeps the mouth shut
    target = np.clip(level, 0, 1.15) ** 0.7
    ahead1 = np.append(target[1:], 0.0)
    ahead2 = np.append(target[2:], [0.0, 0.0])
    mouth = np.clip(np.maximum.reduce([target, 0.85 * ahead1, 0.45 * ahead2]), 0, 1)
    voiced = feat.centroid > 0
    width = np.ones_like(mouth)
    if voiced.sum() > 2:
        logc = np.log(np.maximum(feat.centroid, 1.0))
        z = (logc - np.median(logc[voiced])) / (np.std(logc[voiced]) + 1e-6)
        width = 1 + 0.12 * np.tanh(z) * np.minimum(1.0, 3 * mouth) * voiced
        width = gaussian_filter1d(width, 0.7, mode="nearest")
    return mouth, width


def brow_curve(feat: AudioFeatures) -> np.ndarray:
    """Brows rise on pitch peaks: F0 more than ~1 semitone above the clip's median, held and released
    over a few frames."""
    voiced = feat.f0 > 0
    brow = np.zeros(len(feat.f0))
    if voiced.sum() < 3:
        return brow
    semitones = np.where(voiced, 12 * np.log2(np.maximum(feat.f0, 1) / np.median(feat.f0[voiced])), 0.0)
    target = np.clip((semitones - 1.0) / 3.0, 0, 1) * voiced
    level = 0.0
    for t, v in enumerate(target):            # fast rise, slow fall
        level = max(v, level * 0.82)
        brow[t] = level
    return np.clip(gaussian_filter1d(brow, 0.8, mode="nearest"), 0, 1)


def speed_target(speed_level: float) -> float:
    """Mean head speed (degrees per frame) a clip of this speed level (0..1) is generated with."""
    return SPEED_STILL + (SPEED_LIVELY - SPEED_STILL) * float(speed_level) ** 1.5


def head_pose(rng: np.random.Generator, num_frames: int, speed_level: float, fps: int,
              speech: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Smooth yaw/pitch/roll (T, 3) in degrees and translation (T, 2): low-passed noise whose mean
    speed is `speed_target(speed_level)` (livelier clips also move at higher frequencies), plus a
    small nod with the speech and a per-clip resting pose."""
    cutoff_hz = 0.2 + 0.8 * speed_level
    sigma = fps / (2 * np.pi * cutoff_hz)                           # frames
    pad = int(3 * sigma) + 2
    noise = rng.normal(size=(num_frames + 2 * pad, 3))
    noise = gaussian_filter1d(noise, sigma, axis=0)[pad:pad + num_frames] * np.array([1.0, 0.7, 0.45])
    if speech is not None and num_frames > 1:
        nod = gaussian_filter1d(speech.astype(np.float64), 2.0)
        noise[:, 1] += 0.25 * (nod - nod.mean()) * np.std(noise[:, 0]) / (np.std(nod) + 1e-6)
    moves = np.linalg.norm(np.diff(noise, axis=0), axis=1).mean() if num_frames > 1 else 1.0
    dev = noise * (speed_target(speed_level) / max(moves, 1e-9))
    rest = np.clip(rng.normal(0, [6.0, 4.0, 3.0]), -12, 12)
    pose = POSE_LIMITS * np.tanh((rest + dev) / POSE_LIMITS)      # soft limits
    translation = np.column_stack([0.0008 * dev[:, 0], -0.0005 * dev[:, 1]])
    return pose, translation


def blink_curve(rng: np.random.Generator, num_frames: int, rate: float, fps: int) -> np.ndarray:
    """Blinks at `rate` per second (at least 0.8 s apart): fast close, slower open; some partial."""
    shape = np.array([0.35, 0.8, 1.0, 0.75, 0.45, 0.2, 0.05])
    blink = np.zeros(num_frames)
    t = rng.exponential(1 / rate) * fps * 0.6
    while t < num_frames:
        start = int(t)
        amp = 1.0 if rng.uniform() < 0.85 else rng.uniform(0.5, 0.85)
        seg = shape[: max(0, min(len(shape), num_frames - start))] * amp
        blink[start:start + len(seg)] = np.maximum(blink[start:start + len(seg)], seg)
        t += max(0.8 * fps, rng.exponential(1 / rate) * fps)
    return blink


def gaze_curves(rng: np.random.Generator, num_frames: int, pose: np.ndarray, fps: int) -> np.ndarray:
    """(T, 2) iris offsets: saccades between fixations, eyes partly countering the head turn."""
    gaze = np.zeros((num_frames, 2))
    t = 0
    while t < num_frames:
        length = int(rng.uniform(0.4, 2.5) * fps)
        gaze[t:t + length] = [rng.normal(0, 0.25), rng.normal(0, 0.15)]
        t += max(1, length)
    gaze = gaussian_filter1d(gaze, 0.6, axis=0)
    gaze[:, 0] -= 0.6 * pose[:, 0] / 30
    gaze[:, 1] += 0.4 * pose[:, 1] / 20
    return np.clip(gaze, -1, 1)


def face_motion(wave: np.ndarray, sample_rate: int, fps: int, speed_level: float, blink_rate: float,
                rng: np.random.Generator) -> Motion:
    """All per-frame curves of a clip whose audio is `wave` (length a multiple of sample_rate/fps)."""
    feat = audio_features(wave, sample_rate, fps)
    n = len(feat.rms)
    mouth, width = mouth_curves(feat)
    pose, translation = head_pose(rng, n, speed_level, fps, speech=mouth)
    return Motion(
        mouth_open=mouth,
        mouth_width=width,
        brow_raise=brow_curve(feat),
        blink=blink_curve(rng, n, blink_rate, fps),
        pose=pose,
        translation=translation,
        gaze=gaze_curves(rng, n, pose, fps),
        head_speed=head_speed(pose),
    )
