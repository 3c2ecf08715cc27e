"""Head-speed buckets (centres, radii) fitted on a data set's per-frame head speeds.

The speed encoder codes a speed w as tanh((w - c_i) / r_i * 3) per bucket (config.SpeedConfig).
Centres are equal-mass quantiles of the speeds, so every bucket sees about as many frames; a
bucket's radius is the gap to its next centre (the last one: to its previous), as in the default
config, never below `min_radius`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MIN_RADIUS = 0.02  # degrees per frame


def fit_speed_buckets(speeds: Iterable[np.ndarray] | np.ndarray, num_buckets: int = 9,
                      min_radius: float = MIN_RADIUS) -> dict[str, list[float]]:
    """Per-frame speeds (one array, or one per clip) -> {"centres": [...], "radii": [...]}."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be at least 1, got {num_buckets}")
    if isinstance(speeds, np.ndarray):
        values = speeds.reshape(-1)
    else:
        parts = [np.asarray(s, np.float64).reshape(-1) for s in speeds]
        values = np.concatenate(parts) if parts else np.zeros(0)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no head speeds to fit buckets on")
    centres = np.quantile(values, (np.arange(num_buckets) + 0.5) / num_buckets)
    # strictly increasing, at least min_radius apart (many near-still frames give equal quantiles)
    for i in range(1, num_buckets):
        centres[i] = max(centres[i], centres[i - 1] + min_radius)
    if num_buckets == 1:
        radii = np.array([max(float(np.std(values)), min_radius)])
    else:
        gaps = np.diff(centres)
        radii = np.maximum(np.append(gaps, gaps[-1]), min_radius)
    return {"centres": [round(float(c), 4) for c in centres], "radii": [round(float(r), 4) for r in radii]}
