"""One video of one held-out clip scored against the clip's truth and reference (`score_video`), and
a row of the report from the scores of every clip (`row`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import metrics
from .data import EvalClip
from .evaluator import Evaluator
from .face_detector import face_detector_score

SCORES = ("lip_r", "brow_r", "face_ssim", "background_psnr", "flicker", "identity", "sharpness", "silent_mouth",
          "face_detector")


@dataclass
class VideoScores:
    lip_r: float
    brow_r: float
    face_ssim: float  # mean over frames, inside the clip's face box
    background_psnr: float  # mean over frames, outside the face box (dB)
    flicker: float  # 0..255 levels, frame-to-frame change on the clip's static pixels
    identity: float | None  # mean cosine of the frames' identity embeddings to the reference's
    sharpness: float  # high-frequency energy inside the face box (metrics.sharpness)
    silent_mouth: float | None  # mean evaluator mouth opening over the clip's silent frames
    face_detector: float | None  # an independent detector's mean face score (face_detector_score)
    mouth: np.ndarray = field(repr=False)  # (N,) evaluator mouth opening
    brow: np.ndarray = field(repr=False)


def score_video(frames: np.ndarray, clip: EvalClip, reference: np.ndarray, static: np.ndarray,
                evaluator: Evaluator, silent: np.ndarray) -> VideoScores:
    """frames (N, R, R, 3) uint8 at the clip's resolution; `silent` (N,) bool marks silent frames."""
    measured = evaluator.measure(frames)
    face = clip.face_mask.astype(bool)
    identity = evaluator.identity
    return VideoScores(
        lip_r=metrics.pearson(measured["mouth_open"], clip.truth["mouth_open"]),
        brow_r=metrics.pearson(measured["brow_raise"], clip.truth["brow_raise"]),
        face_ssim=float(metrics.ssim(frames, reference, face).mean()),
        background_psnr=float(metrics.psnr(frames, reference, ~face).mean()),
        flicker=metrics.flicker(frames, static),
        identity=float(identity.similarity(frames, reference).mean()) if identity is not None else None,
        sharpness=metrics.sharpness(frames, face),
        silent_mouth=float(measured["mouth_open"][silent].mean()) if silent.any() else None,
        face_detector=face_detector_score(frames),
        mouth=measured["mouth_open"], brow=measured["brow_raise"])


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def row(scores: list[VideoScores], clips: list[EvalClip], max_lag: int, real: list[VideoScores]) -> dict:
    """Means over clips (lip / brow r over the clips whose true curve moves), the best offset, and
    sharpness as a ratio to the real clip's (1: as sharp as the real video)."""
    offset, offset_r = metrics.best_offset([s.mouth for s in scores], [c.truth["mouth_open"] for c in clips], max_lag)
    moving = lambda label, name: _mean([getattr(s, name) for s, c in zip(scores, clips)  # noqa: E731
                                        if metrics.varies(c.truth[label])])
    ratios = [s.sharpness / r.sharpness if r.sharpness > 0 else None for s, r in zip(scores, real)]
    per_clip = [{"clip": c.id, **{k: getattr(s, k) for k in SCORES}, "sharpness_ratio": q}
                for s, c, q in zip(scores, clips, ratios)]
    return {"lip_r": moving("mouth_open", "lip_r"), "offset": offset, "offset_r": offset_r,
            "brow_r": moving("brow_raise", "brow_r"),
            **{k: _mean([getattr(s, k) for s in scores]) for k in SCORES if k not in ("lip_r", "brow_r", "sharpness")},
            "sharpness_ratio": _mean(ratios), "per_clip": per_clip}
