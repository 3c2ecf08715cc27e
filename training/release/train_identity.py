"""Train the evaluator's identity embedding (emo_rt/eval/identity.py) by metric learning over the
train-split identities of one or more synthetic corpora: a cosine-softmax with an additive margin
(CosFace) over identity classes, on face crops with mild degradations (placement, blur, noise, JPEG;
never colour, which is part of who a corpus identity is). Scored by the ROC AUC of same- vs
different-identity frame pairs on held-out (val, test) identities.
"""

from __future__ import annotations

import platform
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from emo_rt.eval.data import HeldOutData
from emo_rt.eval.evaluator import crop_resize, to_tensor
from emo_rt.eval.identity import IdentityConfig, IdentityEmbedder, IdentityEncoder
from emo_rt.io.files import short_name
from emo_rt.runtime.progress import progress_bar

SCALE, MARGIN = 16.0, 0.25  # CosFace: logits = SCALE * (cos - MARGIN at the true class)
FRAME_STEP = 3  # every 3rd frame of a clip: consecutive frames are near copies
PAIRS = 20000  # frame pairs of each kind for the ROC AUC


def identity_frames(datasets: list[HeldOutData], split: str, config: IdentityConfig,
                    step: int = FRAME_STEP) -> tuple[np.ndarray, np.ndarray]:
    """Every `step`-th frame of every clip of `split` in each corpus, as embedding inputs
    (N, S, S, 3) uint8, with an integer identity label per frame (identities of different corpora
    are different)."""
    frames, labels, names = [], [], {}
    for k, data in enumerate(datasets):
        for entry in data.index.split(split):
            label = names.setdefault((k, entry.identity), len(names))
            clip = data.index.read(entry, "frames")[::step]
            frames.append(crop_resize(clip, config.crop, config.input_size))
            labels.append(np.full(len(clip), label))
    if not frames:
        return np.zeros((0, config.input_size, config.input_size, 3), np.uint8), np.zeros(0, int)
    return np.concatenate(frames), np.concatenate(labels)


def degrade(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mild augmentation of a uint8 (S, S, 3) crop that keeps who it is (no colour change)."""
    size = frame.shape[0]
    scale, shift = rng.uniform(0.94, 1.06), rng.uniform(-0.04, 0.04, 2) * size
    matrix = np.array([[scale, 0, (1 - scale) * size / 2 + shift[0]], [0, scale, (1 - scale) * size / 2 + shift[1]]])
    out = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.uniform() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.2, 1.0))
    if rng.uniform() < 0.3:
        noisy = out.astype(np.float32) + rng.standard_normal(out.shape, np.float32) * np.float32(rng.uniform(1, 6))
        out = np.clip(noisy, 0, 255).astype(np.uint8)
    if rng.uniform() < 0.3:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 90))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def roc_auc(same: np.ndarray, different: np.ndarray) -> float:
    """P(a same-identity similarity > a different-identity one), ties counted half (Mann-Whitney)."""
    ranks = rankdata(np.concatenate([same, different]))  # ties get their average rank
    return float((ranks[:len(same)].sum() - len(same) * (len(same) + 1) / 2) / (len(same) * len(different)))


def pair_figures(embedder: IdentityEmbedder, frames: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """ROC AUC and mean cosines of random same- and different-identity frame pairs."""
    if len(np.unique(labels)) < 2:
        return {"auc": None, "identities": int(len(np.unique(labels)))}
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        z = np.concatenate([embedder.network(to_tensor(frames[i:i + 256])).double().numpy()
                            for i in range(0, len(frames), 256)])
    a, b = rng.integers(0, len(z), (2, 8 * PAIRS))
    keep = a != b
    a, b = a[keep], b[keep]
    cos = (z[a] * z[b]).sum(1)
    same, different = cos[labels[a] == labels[b]][:PAIRS], cos[labels[a] != labels[b]][:PAIRS]
    return {"auc": round(roc_auc(same, different), 4), "same_cosine": round(float(same.mean()), 4),
            "different_cosine": round(float(different.mean()), 4), "pairs": [len(same), len(different)],
            "identities": int(len(np.unique(labels))), "frames": int(len(frames))}


def train_identity(datasets: list[HeldOutData], steps: int, batch: int, lr: float, seed: int,
                   progress: bool = True) -> tuple[IdentityEmbedder, dict]:
    """The embedding trained on the train splits of `datasets`, and a record of how."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = IdentityConfig()
    frames, labels = identity_frames(datasets, "train", config)
    classes = int(labels.max()) + 1
    network = IdentityEncoder(config)
    weight = torch.nn.Parameter(F.normalize(torch.randn(classes, config.dim), dim=-1))
    optimiser = torch.optim.AdamW([*network.parameters(), weight], lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=0.05)
    started, running = time.perf_counter(), None
    with progress_bar("loss", enabled=progress) as bar:
        task = bar.add_task("identity embedding", total=steps, loss="")
        for _ in range(steps):
            network.train()
            pick = rng.integers(0, len(frames), batch)
            images = to_tensor(np.stack([degrade(frames[i], rng) for i in pick]))
            target = torch.from_numpy(labels[pick])
            cosine = network(images) @ F.normalize(weight, dim=-1).T  # (B, classes)
            logits = SCALE * (cosine - MARGIN * F.one_hot(target, classes))
            loss = F.cross_entropy(logits, target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(task, advance=1, loss=f"loss {running:.3f}")
    record = {"corpora": [[str(d.shards), str(d.corpus)] for d in datasets], "train_identities": classes,
              "train_frames": int(len(frames)), "steps": steps, "batch": batch, "lr": lr, "seed": seed,
              "train_seconds": round(time.perf_counter() - started, 1), "torch": torch.__version__,
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "parameters": sum(p.numel() for p in network.parameters())}
    trained = IdentityEmbedder(IdentityEncoder(IdentityConfig(training=record)))
    trained.network.load_state_dict(network.state_dict())
    return IdentityEmbedder(trained.network.eval()), record


def identity_figures(embedder: IdentityEmbedder, corpora: list[HeldOutData]) -> dict:
    """Pair figures on the real frames of held-out identities (never trained on): the val and test
    splits of the first corpus, and the test split of each other corpus the embedding learned from."""
    first, *others = corpora
    figures = {split: pair_figures(embedder, *identity_frames([first], split, embedder.config))
               for split in ("val", "test")}
    for data in others:
        name = f"test of {short_name(data.corpus)}"
        figures[name] = pair_figures(embedder, *identity_frames([data], "test", embedder.config))
    return figures
