"""lab probe (not installed): is the shipped model's broken face aligned to the latent grid? The ratio of
luma gradients across block boundaries to those inside, over the face, at every offset, for the model's
raw frames of seed-7 test clip c00036 (through the eval's call) and for the real clip. Needs ~/emo-runs/corpus7.
    python lab/probes/v3_anchor/block_boundaries.py"""
from pathlib import Path

import cv2
import numpy as np
import torch

from emo_rt.eval.data import HeldOutData
from emo_rt.eval.runner import clip_reference
from emo_rt.pipeline import EmoPipeline

HOME = Path.home() / "emo-runs"


def boundary_ratio(frames: np.ndarray, mask: np.ndarray, block: int) -> float:
    """Mean |luma step| across columns/rows k * block - 1 -> k * block over the mean elsewhere, inside `mask`."""
    sel = mask.astype(bool)
    ratios = []
    for f in frames:
        y = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float64)
        for d, m in ((np.abs(np.diff(y, axis=1)), sel[:, 1:] & sel[:, :-1]),
                     (np.abs(np.diff(y, axis=0)).T, (sel[1:] & sel[:-1]).T)):
            edge = (np.arange(d.shape[1]) + 1) % block == 0
            ratios.append(d[:, edge][m[:, edge]].mean() / max(d[:, ~edge][m[:, ~edge]].mean(), 1e-6))
    return float(np.mean(ratios))


torch.set_num_threads(2)
data = HeldOutData(HOME / "corpus7" / "shards", HOME / "corpus7" / "synth")
clip = data.load([e for e in data.entries("test") if e.id == "c00036"][0])
pipe = EmoPipeline.from_pretrained(None)
model = np.concatenate(list(pipe(clip_reference(clip, 0), clip.audio.astype(np.float32), pipe.defaults)))
mask = clip.face_mask
for name, frames in (("model", model), ("real", clip.frames)):
    ratios = [round(boundary_ratio(frames[:, o:, o:], mask[o:, o:], 8), 3) for o in range(8)]
    print(f"block 8, {name}, offsets 0-7:", ratios)
