"""Head speed, the signal the model is conditioned on and scored against, defined once for the
synthetic corpus, preprocessing and evaluation."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d


def head_speed(pose: np.ndarray, smooth: float = 0.0) -> np.ndarray:
    """(N, 3) yaw/pitch/roll in degrees -> (N,) degrees per frame: the norm of the pose change
    from the previous frame, frame 0 copying frame 1. `smooth` > 0 first applies a Gaussian of that
    many frames along time (a measured pose's per-frame noise would otherwise read as motion)."""
    pose = np.asarray(pose, np.float64)
    if len(pose) < 2:
        return np.zeros(len(pose))
    if smooth:
        pose = gaussian_filter1d(pose, smooth, axis=0, mode="nearest")
    step = np.linalg.norm(np.diff(pose, axis=0), axis=1)
    return np.concatenate([step[:1], step])
