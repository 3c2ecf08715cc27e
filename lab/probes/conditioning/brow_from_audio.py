"""Probe: is the brow curve in what the Backbone hears? Ridge regression from the cached audio features
(wav2vec2 layers + the prosody row, +/- K frames of context) to the sidecar's brow_raise and mouth_open,
fitted on the train split of corpus seed 0, scored on its test split as the eval scores (Pearson r per clip,
mean over clips).

    python lab/probes/conditioning/brow_from_audio.py [K]
"""
import sys
from pathlib import Path

import numpy as np

from emo_rt.eval.data import HeldOutData
from emo_rt.models import EmoModel
from emo_rt.training.stage_data import audio_cache_dir

K = int(sys.argv[1]) if len(sys.argv) > 1 else 2
root = Path.home() / "emo-runs/corpus"
data = HeldOutData(root / "shards", root / "synth")
# the cache the stage-2..4 runs wrote (keyed by the audio encoder; the shipped fp16 copy keys another)
cache = audio_cache_dir(root / "shards", EmoModel.from_pretrained(Path.home() / "emo-runs/v3/run/stage4/model"))


def rows(split):
    out = []
    for entry in data.entries(split):
        feats = np.load(Path(cache) / f"{entry.id}.npy").astype(np.float32)  # (N, L, D)
        n = feats.shape[0]
        flat = feats.reshape(n, -1)
        idx = np.clip(np.arange(n)[:, None] + np.arange(-K, K + 1)[None], 0, n - 1)
        x = flat[idx].reshape(n, -1)
        truth, _ = data.truth(entry)
        out.append((entry.id, x, truth))
    return out


train, test = rows("train"), rows("test")
X = np.concatenate([x for _, x, _ in train])
mu, sd = X.mean(0), X.std(0) + 1e-6
X = (X - mu) / sd
for label in ("mouth_open", "brow_raise"):
    y = np.concatenate([t[label] for _, _, t in train])
    for lam in (10.0, 100.0, 1000.0):
        w = np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ (y - y.mean()))
        rs = [np.corrcoef(((x - mu) / sd) @ w, t[label])[0, 1] for _, x, t in test]
        print(f"{label:10s} ridge {lam:6.0f}: test r per clip {np.mean(rs):.3f} (min {np.min(rs):.3f}), "
              f"features {X.shape[1]}, train frames {X.shape[0]}")
