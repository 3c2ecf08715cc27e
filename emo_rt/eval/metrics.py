"""Metric functions of `emo-rt eval`, plain numpy on per-frame curves and uint8 frames (N, R, R, 3).

Conventions: a correlation with a constant series is 0 (no variation follows nothing; a still video
scores 0, not NaN), and means over clips skip clips whose true curve is constant (`varies`); a lag k
pairs video frame t + k with truth frame t (k > 0: the video is late).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.ndimage import binary_erosion
from scipy.stats import spearmanr

PSNR_CAP_DB = 60.0  # identical images would be +inf; capped so reports stay finite JSON


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two (N,) series; 0.0 when either is constant or N < 2."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def varies(x: np.ndarray, min_range: float = 0.1) -> bool:
    """A ground-truth curve with something to follow: it spans at least `min_range` (label units:
    0.1 of the 0..1 scale of mouth, brows and blink). A clip without a blink, or whose brows rise by
    0.03, has nothing to correlate with."""
    x = np.asarray(x, np.float64)
    return x.size >= 2 and float(np.ptp(x)) >= min_range


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rho; 0.0 when either side is constant or has fewer than 2 values."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or np.ptp(a) < 1e-12 or np.ptp(b) < 1e-12:
        return 0.0
    return float(spearmanr(a, b)[0])


def lagged_pairs(video: np.ndarray, truth: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """(video[t + lag], truth[t]) over the frames where both exist."""
    n = min(len(video), len(truth))
    if lag >= 0:
        return video[lag:n], truth[:n - lag]
    return video[:n + lag], truth[-lag:n]


def lag_correlations(videos: Sequence[np.ndarray], truths: Sequence[np.ndarray], max_lag: int = 5) -> dict[int, float]:
    """Pearson r at each lag in -max_lag..max_lag, averaged over clips (each clip shifted and
    correlated on its own: pooling the frames would reward differences between clips' means)."""
    return {lag: float(np.mean([pearson(*lagged_pairs(np.asarray(v), np.asarray(t), lag))
                                for v, t in zip(videos, truths)]))
            for lag in range(-max_lag, max_lag + 1)}


def best_offset(videos: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                max_lag: int = 5) -> tuple[int | None, float]:
    """The lag (frames, video late > 0) with the highest clip-mean r, and that r; (None, 0.0) when
    no lag correlates (e.g. a still video). Ties go to the smallest |lag|."""
    rs = lag_correlations(videos, truths, max_lag)
    lag = max(rs, key=lambda k: (rs[k], -abs(k)))
    return (lag if rs[lag] > 0 else None), rs[lag]


def _gray(frames: np.ndarray) -> np.ndarray:
    """uint8 (..., R, R, 3) RGB -> float64 (..., R, R) luma (BT.601)."""
    return np.asarray(frames, np.float64) @ np.array([0.299, 0.587, 0.114])


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM (Wang et al. 2004: 11-tap Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of two uint8
    (R, R, 3) images on luma: (R, R) map, 1 where identical."""
    x, y = _gray(a), _gray(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(frames: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(N,) mean SSIM of each frame vs the reference, over `mask` (R, R) bool (all pixels if None)."""
    sel = np.ones(reference.shape[:2], bool) if mask is None else mask.astype(bool)
    return np.array([ssim_map(f, reference)[sel].mean() for f in frames])


def psnr(frames: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None,
         cap_db: float = PSNR_CAP_DB) -> np.ndarray:
    """(N,) PSNR in dB of each uint8 frame (N, R, R, 3) vs `reference` (R, R, 3), or vs its own frame
    of `reference` (N, R, R, 3), over `mask` (R, R) bool (all pixels if None), all channels; capped
    at `cap_db` (identical frames: the cap)."""
    frames, reference = np.asarray(frames, np.float64), np.asarray(reference, np.float64)
    sel = np.ones(frames.shape[1:3], bool) if mask is None else mask.astype(bool)
    target = reference[..., sel, :] if reference.ndim == 4 else reference[sel][None]
    diff = frames[:, sel] - target  # (N, P, 3)
    mse = np.maximum((diff * diff).mean(axis=(1, 2)), 255.0 ** 2 * 10 ** (-cap_db / 10))
    return 10 * np.log10(255.0 ** 2 / mse)


def static_mask(frames: np.ndarray, face_mask: np.ndarray, tolerance: float = 3.0, margin: int = 4) -> np.ndarray:
    """(R, R) bool: pixels of a real clip that never change (every frame within `tolerance` levels
    of the clip's median) and lie outside the face box, shrunk by `margin` pixels. Where a
    generated video changes there, it flickers."""
    frames = np.asarray(frames, np.float32)
    median = np.median(frames, axis=0)
    still = (np.abs(frames - median).max(axis=(0, 3)) <= tolerance) & ~face_mask.astype(bool)
    return binary_erosion(still, iterations=margin) if margin else still


def flicker(frames: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute change between consecutive frames over `mask` (R, R) bool, in 0..255 levels:
    0 for a video that holds those pixels still."""
    if len(frames) < 2 or not mask.any():
        return 0.0
    x = np.asarray(frames, np.float32)[:, mask]  # (N, P, 3)
    return float(np.abs(np.diff(x, axis=0)).mean())


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y on x (0.0 with fewer than 2 distinct x): how much of a requested
    change shows up, where Spearman only says whether it goes the right way."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2 or np.ptp(x) < 1e-12:
        return 0.0
    return float(np.polyfit(x, y, 1)[0])


def drift(first: float, last: float) -> float:
    """Relative loss of similarity from the start of a render to its end: (first - last) / first."""
    return float((first - last) / first) if first > 0 else 0.0


def sharpness(frames: np.ndarray, mask: np.ndarray) -> float:
    """High-frequency energy: mean squared Laplacian of the luma over `mask` (R, R) bool, per frame,
    averaged. A blurred frame has less; compare a video with its real counterpart."""
    sel = mask.astype(bool)
    energy = [float((cv2.Laplacian(_gray(f), cv2.CV_64F, ksize=3)[sel] ** 2).mean()) for f in frames]
    return float(np.mean(energy)) if energy else 0.0


BLUR_SIGMA = 1.5  # pixels at 128 px: the known degradation the distribution and sharpness figures are read against


def blurred(frames: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """uint8 (N, R, R, 3) frames blurred by a fixed Gaussian: the eval's control for a soft render."""
    return np.stack([cv2.GaussianBlur(np.ascontiguousarray(f), (0, 0), sigma) for f in frames])


def silent_frames(audio: np.ndarray, num_frames: int, samples_per_frame: int, ratio: float = 0.05) -> np.ndarray:
    """(N,) bool: frames whose audio RMS is below `ratio` x the clip's 95th-percentile frame RMS."""
    x = np.asarray(audio[:num_frames * samples_per_frame], np.float64)
    x = np.pad(x, (0, num_frames * samples_per_frame - x.size))
    rms = np.sqrt((x.reshape(num_frames, samples_per_frame) ** 2).mean(1))
    loud = np.percentile(rms, 95)
    return rms < ratio * loud if loud > 0 else np.ones(num_frames, bool)
