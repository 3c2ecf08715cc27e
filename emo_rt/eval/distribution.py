"""How far generated frames are from real ones as a distribution, in the evaluator's own features:
a frame-level Fréchet distance (an FID analogue) and a clip-level one over short frame sequences (an
FVD analogue). Frame features are the label network's hidden layer beside the identity embedding;
a sequence of `SEQUENCE` frames is described by the mean of its PCA-reduced frame features and
their mean frame-to-frame change, so motion counts as well as appearance.
"""

from __future__ import annotations

import numpy as np

SEQUENCE = 8  # frames per clip-level sample
STRIDE = 4  # frames between sequence starts
PCA_DIM = 24  # frame features kept per sequence sample (fitted on the real frames)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^1/2) of two sample sets (N, D) and (M, D)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # Tr (C_a C_b)^1/2 = sum of sqrt eigenvalues of C_a^1/2 C_b C_a^1/2 (symmetric PSD: stable when singular)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(max(0.0, ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root))


class FeatureSpace:
    """PCA of the real frames' features, and the clip-level samples built from it."""

    def __init__(self, real_frame_features: np.ndarray, dim: int = PCA_DIM):
        x = np.asarray(real_frame_features, np.float64)
        self.mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.basis = vt[:dim].T  # (D, dim)

    def sequences(self, clips: list[np.ndarray]) -> np.ndarray:
        """Per clip (N_i, D) frame features -> (S, 2 * dim): each window of SEQUENCE frames (every
        STRIDE frames) as [mean feature, mean |frame-to-frame change|]."""
        out = []
        for features in clips:
            z = (np.asarray(features, np.float64) - self.mean) @ self.basis
            for start in range(0, len(z) - SEQUENCE + 1, STRIDE):
                window = z[start:start + SEQUENCE]
                out.append(np.concatenate([window.mean(0), np.abs(np.diff(window, axis=0)).mean(0)]))
        return np.asarray(out)


def distances(generated: list[np.ndarray], real: list[np.ndarray], space: FeatureSpace) -> dict:
    """Frame- and clip-level Fréchet distances of per-clip frame features, generated vs real (None
    where a side has fewer than 2 samples)."""
    a, b = space.sequences(generated), space.sequences(real)
    return {"fid": frechet_distance(np.concatenate(generated), np.concatenate(real)),
            "fvd": frechet_distance(a, b) if min(len(a), len(b)) >= 2 else None,
            "frames": int(sum(len(g) for g in generated)), "sequences": [len(a), len(b)]}
