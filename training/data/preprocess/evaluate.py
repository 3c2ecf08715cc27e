"""Preprocessing checked against the synthetic corpus's ground truth (its JSON sidecars): face boxes
(IoU), head speed (rank correlation across clips) and the audio / mouth-opening alignment. Used by
the tests and benchmarks/bench_preprocess.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from emo_rt.io.shards import ShardIndex


@dataclass
class SidecarComparison:
    clips: int  # kept clips that have a sidecar
    frames: int
    iou_mean: float  # detected vs true face box
    iou_rate: float  # fraction of frames with IoU >= 0.8
    speed_spearman: float  # clips' mean head speed, estimated vs true
    mouth_envelope_r: float  # mean over clips of r(true mouth opening, RMS of the shard audio per frame)
    mouth_envelope_r_shifted: float  # the same with the audio 5 frames late (alignment control)

    def summary(self) -> str:
        return (f"{self.clips} clips, {self.frames} frames: face box IoU mean {self.iou_mean:.3f}, "
                f">= 0.8 on {self.iou_rate:.1%} of frames; head speed Spearman {self.speed_spearman:.3f}; "
                f"mouth vs audio envelope r {self.mouth_envelope_r:.3f} (5 frames off: "
                f"{self.mouth_envelope_r_shifted:.3f})")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of x, y, w, h boxes row by row: (N, 4), (N, 4) -> (N,)."""
    ix = np.clip(np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    return inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)


def frame_rms(audio: np.ndarray, samples_per_frame: int) -> np.ndarray:
    frames = audio[: audio.size // samples_per_frame * samples_per_frame].reshape(-1, samples_per_frame)
    return np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))


def compare_with_sidecars(out_dir: str | Path, corpus_dir: str | Path, shift: int = 5) -> SidecarComparison:
    """Compare preprocessed clips (OUT/index.json, report.json) with the corpus's sidecars."""
    out, corpus = Path(out_dir), Path(corpus_dir)
    index = ShardIndex(out)
    report = json.loads((out / "report.json").read_text())
    crops = {c["id"]: c for c in report["clips"]}
    spf = index.sample_rate // index.fps
    ious, true_speed, est_speed, mouth_r, mouth_r_shifted = [], [], [], [], []
    for clip in index.clips:
        sidecar_path = (corpus / clip.source).with_suffix(".json")
        if not sidecar_path.is_file():
            continue
        truth = json.loads(sidecar_path.read_text())["frames"]
        kept = crops[clip.id]
        a, b = kept["start_frame"], kept["start_frame"] + clip.num_frames
        x0, y0, side = kept["crop"]
        scale = index.resolution / side
        true_boxes = (np.asarray(truth["face_box"], np.float64)[a:b] - [x0, y0, 0, 0]) * scale
        ious.append(box_iou(index.read(clip, "face_boxes").astype(np.float64), true_boxes))
        true_speed.append(float(np.mean(truth["head_speed"][a:b])))
        est_speed.append(float(np.mean(index.read(clip, "head_speed"))))
        if clip.has_audio:
            mouth = np.asarray(truth["mouth_open"], np.float64)[a:b]
            rms = frame_rms(index.read(clip, "audio"), spf)
            if mouth.std() > 0 and rms.std() > 0:
                mouth_r.append(np.corrcoef(mouth, rms)[0, 1])
                mouth_r_shifted.append(np.corrcoef(mouth[shift:], rms[:-shift])[0, 1])
    iou = np.concatenate(ious) if ious else np.zeros(0)
    return SidecarComparison(
        clips=len(ious), frames=int(iou.size),
        iou_mean=float(iou.mean()) if iou.size else float("nan"),
        iou_rate=float(np.mean(iou >= 0.8)) if iou.size else float("nan"),
        speed_spearman=float(spearmanr(true_speed, est_speed)[0]) if len(true_speed) > 2 else float("nan"),
        mouth_envelope_r=float(np.mean(mouth_r)) if mouth_r else float("nan"),
        mouth_envelope_r_shifted=float(np.mean(mouth_r_shifted)) if mouth_r_shifted else float("nan"),
    )
