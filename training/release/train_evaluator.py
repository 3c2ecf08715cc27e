"""Train the face evaluator (emo_rt/eval/evaluator.py) on a synthetic corpus's train split: shard
crops in, sidecar curves (mouth, lip width, brows, blink, head pose) as targets, with degradations
(blur, rescale, noise, JPEG, colour, small shifts) so it also reads generated frames. Writes the
weights, config and a card (README.md) with validation (val split) and test-split figures.

    emo-rt train-evaluator --data corpus/shards --corpus corpus/synth [--out emo_rt/eval/weights] [--steps 3000]
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from emo_rt.eval.data import LABELS, HeldOutData
from emo_rt.eval.evaluator import (
    WEIGHTS_DIR,
    WEIGHTS_FILE,
    Evaluator,
    EvaluatorConfig,
    FaceEvaluator,
    crop_resize,
    to_tensor,
)
from emo_rt.eval.identity import IdentityConfig
from emo_rt.eval.metrics import pearson, varies
from emo_rt.io.files import atomic_directory, short_name, write_json_atomic, write_text_atomic
from emo_rt.runtime.progress import progress_bar
from emo_rt.training.release.train_identity import identity_figures, train_identity


def load_split(data: HeldOutData, split: str, config: EvaluatorConfig) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """All frames of a split as evaluator inputs (N, S, S, 3) uint8 (central crop, resized), their
    labels (N, L), and each clip's frame count."""
    frames, labels, lengths = [], [], []
    for entry in data.entries(split):
        truth, _ = data.truth(entry)
        frames.append(crop_resize(data.index.read(entry, "frames"), config.crop, config.input_size))
        labels.append(np.stack([truth[name] for name in LABELS], 1))
        lengths.append(entry.num_frames)
    return np.concatenate(frames), np.concatenate(labels).astype(np.float32), lengths


def degrade(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One training augmentation of a uint8 (S, S, 3) crop at the evaluator's input size: what a
    generator's output may look like (soft, noisy, compressed, slightly off in colour and placement),
    none of which moves a label."""
    size = frame.shape[0]
    scale = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.03, 0.03, 2) * size
    matrix = np.array([[scale, 0, (1 - scale) * size / 2 + shift[0]], [0, scale, (1 - scale) * size / 2 + shift[1]]])
    out = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.uniform() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.2, 0.8))
    if rng.uniform() < 0.3:
        small = max(16, int(size * rng.uniform(0.5, 0.9)))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                         interpolation=cv2.INTER_LINEAR)
    x = out.astype(np.float32)
    gain = np.float32(rng.uniform(0.88, 1.12) * rng.uniform(0.95, 1.05, 3))
    mean = x.mean()
    x = (x - mean) * np.float32(rng.uniform(0.85, 1.15)) + mean * gain + np.float32(rng.uniform(-12, 12))
    if rng.uniform() < 0.5:
        x += rng.standard_normal(x.shape, np.float32) * np.float32(rng.uniform(1, 8))
    out = np.clip(x, 0, 255).astype(np.uint8)
    if rng.uniform() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def per_clip_r(pred: np.ndarray, truth: np.ndarray, lengths: list[int]) -> np.ndarray:
    """(clips, L) Pearson r of each label in each clip; NaN where the true curve is constant."""
    rs, start = [], 0
    for n in lengths:
        p, t = pred[start:start + n], truth[start:start + n]
        rs.append([pearson(p[:, j], t[:, j]) if varies(t[:, j]) else np.nan for j in range(t.shape[1])])
        start += n
    return np.asarray(rs)


def figures(evaluator: Evaluator, frames: np.ndarray, labels: np.ndarray, lengths: list[int]) -> dict:
    """Per label: mean r over the clips where it varies, how many those are, mean absolute error."""
    pred = evaluator.predict(frames)
    r = per_clip_r(pred, labels, lengths)
    mae = np.abs(pred - labels).mean(0)
    return {name: {"r": round(float(np.nanmean(r[:, j])), 4), "clips": int(np.isfinite(r[:, j]).sum()),
                   "mae": round(float(mae[j]), 4)} for j, name in enumerate(LABELS)}


def train(data_dir: Path, corpus_dir: Path, out: Path, steps: int, batch: int, lr: float, seed: int,
          progress: bool = True) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = HeldOutData(data_dir, corpus_dir)
    config = EvaluatorConfig()
    train_frames, train_labels, _ = load_split(data, "train", config)
    val = load_split(data, "val", config)
    network = FaceEvaluator(config)
    offsets, scales = np.float32(config.offsets), np.float32(config.scales)
    targets_all = torch.from_numpy((train_labels - offsets) / scales)
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=0.05)
    loss_fn = nn.MSELoss(reduction="none")  # not L1: its median answer is 0 for sparse blinks and brow raises
    weights = torch.tensor(config.loss_weights)
    history = []
    started = time.perf_counter()
    with progress_bar("loss", enabled=progress) as bar:
        task = bar.add_task("train evaluator", total=steps, loss="")
        running = None
        for step in range(1, steps + 1):
            network.train()
            pick = rng.integers(0, len(train_frames), batch)
            images = to_tensor(np.stack([degrade(train_frames[i], rng) for i in pick]))
            loss = (loss_fn(network(images), targets_all[pick]).mean(0) * weights).sum() / weights.sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(task, advance=1, loss=f"loss {running:.4f}")
            if step % max(1, steps // 6) == 0 or step == steps:
                network.eval()
                val_figures = figures(Evaluator(network), *val)
                history.append({"step": step, "seconds": round(time.perf_counter() - started, 1),
                                "loss": round(running, 5), "val_r": {k: v["r"] for k, v in val_figures.items()}})
                bar.console.print(f"step {step}: loss {running:.4f}, val r " +
                                  ", ".join(f"{k} {v['r']:.3f}" for k, v in val_figures.items()))
    seconds = time.perf_counter() - started
    network.eval()
    test_clips = len(data.entries("test"))
    result = {
        "data": str(data_dir), "corpus": str(corpus_dir),
        "train_clips": len(data.entries("train")), "train_frames": int(len(train_frames)),
        "val_clips": len(val[2]), "test_clips": test_clips,
        "steps": steps, "batch": batch, "lr": lr, "seed": seed, "threads": torch.get_num_threads(),
        "train_seconds": round(seconds, 1), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__, "parameters": sum(p.numel() for p in network.parameters()),
        "history": history,
    }
    evaluator = Evaluator(FaceEvaluator(EvaluatorConfig(training={k: result[k] for k in (
        "train_clips", "train_frames", "steps", "batch", "lr", "seed", "train_seconds")})))
    evaluator.network.load_state_dict(network.state_dict())
    evaluator.save_pretrained(out)
    return write_card(out, data, result)


def write_card(out: Path, data: HeldOutData, result: dict) -> dict:
    """Figures of the weights as stored in `out` (fp16) on the val and test splits -> training.json
    and the card README.md."""
    shipped = Evaluator.from_pretrained(out)
    result["weights_bytes"] = (out / WEIGHTS_FILE).stat().st_size
    result["val"] = figures(shipped, *load_split(data, "val", shipped.config))
    result["test"] = figures(shipped, *load_split(data, "test", shipped.config))
    if shipped.identity is not None and "identity" in result:
        others = [HeldOutData(shards, corpus) for shards, corpus in result["identity"]["corpora"][1:]]
        result["identity_figures"] = identity_figures(shipped.identity, [data, *others])
    write_json_atomic(out / "training.json", result)
    write_text_atomic(out / "README.md", card(result))
    return result


def card(result: dict) -> str:
    val, test = result["val"], result["test"]
    rows = "\n".join(f"| {name} | {val[name]['r']:.3f} ({val[name]['clips']}) | {test[name]['r']:.3f} "
                     f"({test[name]['clips']}) | {test[name]['mae']:.3f} |" for name in LABELS)
    return f"""# Face evaluator (emo-rt eval)

A {result['parameters'] / 1e6:.2f}M-parameter CNN (`emo_rt/eval/evaluator.py`) reading, per frame of a
face-centred crop (the shard/render geometry: crop side = 1.6 x the clip's face box), mouth opening,
lip width, brow raise, blink (0..1 / relative width, as in the synthetic corpus's sidecars) and head
yaw, pitch, roll (degrees). Input: the frame's central 0.8 square, area-resized to 80x80. Weights
stored fp16 ({result['weights_bytes'] / 1e6:.1f} MB).

- Training data: the **train split only** of `{result['corpus']}` ({result['train_clips']} clips,
  {result['train_frames']} frames, shards `{result['data']}`), with blur / rescale / noise / JPEG /
  colour / shift degradations so it also reads generated frames.
- {result['steps']} steps of batch {result['batch']}, AdamW one-cycle lr {result['lr']}, seed {result['seed']},
  {result['threads']} CPU thread(s): {result['train_seconds'] / 60:.1f} min on this project's 2-core CPU box
  (shared with other jobs), torch {result['torch']}.
- Made with: `emo-rt train-evaluator --data {result['data']} --corpus {result['corpus']} \\
  --out emo_rt/eval/weights --steps {result['steps']} --seed {result['seed']}`

Figures of the shipped (fp16) weights on real held-out videos: Pearson r per clip, averaged over the
{result['val_clips']} val and {result['test_clips']} test clips (clips where a label never changes, e.g. no blink, are
left out of that label's mean: "clips" counts the rest), and the test mean absolute error in the
label's units. The mouth-opening r on test videos must be >= 0.9 (tests/eval also checks it on a
corpus generated with another seed).

| label | val r (clips) | test r (clips) | test MAE |
| --- | --- | --- | --- |
{rows}

{identity_card(result)}
Brow raise is read with a per-identity offset and gain (where a neutral brow sits differs between
identities, and one frame cannot tell), hence its MAE; within a clip it follows the truth, which is
what the eval's brow r measures. Blink and pose are not driven by the audio in the corpus, so
`emo-rt eval` uses them for the oracle figures and for head speed (from the pose), not as scores.
"""


def identity_card(result: dict) -> str:
    """The card's identity-embedding section (empty without one)."""
    record, figures_ = result.get("identity"), result.get("identity_figures")
    if not record or not figures_:
        return ""
    rows = "\n".join(f"| {split} | {f['identities']} | {f['frames']} | {f['auc']:.4f} | {f['same_cosine']:.3f} | "
                     f"{f['different_cosine']:.3f} |" for split, f in figures_.items() if f.get("auc") is not None)
    short = [(short_name(shards), short_name(corpus)) for shards, corpus in record["corpora"]]  # not this machine's paths
    corpora = ", ".join(f"`{corpus}`" for _, corpus in short)
    return f"""## Identity embedding (identity similarity, a CSIM analogue)

A {record['parameters'] / 1e6:.2f}M-parameter CNN (`emo_rt/eval/identity.py`) maps the face crop (the
frame's central 0.8, at 64x64) to a {IdentityConfig().dim}-d unit vector; `emo-rt eval` reports the mean
cosine of each frame to the reference. Trained by metric learning (CosFace: scale 16, margin 0.25)
over the **train-split identities only** of {corpora} ({record['train_identities']} identities,
{record['train_frames']} frames, every 3rd frame of each clip), {record['steps']} steps of batch {record['batch']},
lr {record['lr']}, {record['train_seconds'] / 60:.1f} min on the 2-core CPU box. Same vs different identity,
random frame pairs of real held-out videos (identities never trained on). Made with:
`emo-rt train-evaluator --data {short[0][0]} --corpus {short[0][1]} --part identity
{' '.join(f'--identity-data {s} {c}' for s, c in short[1:])} --identity-steps {record['steps']}`

| split | identities | frames | ROC AUC | same-identity cosine | different-identity cosine |
| --- | --- | --- | --- | --- | --- |
{rows}

"""


def run(data: str | Path, corpus: str | Path, out: str | Path | None, steps: int, batch: int, lr: float,
        seed: int, figures_only: bool = False, progress: bool = True, part: str = "all",
        identity_data: list[tuple[str, str]] = (), identity_steps: int = 3000) -> dict:
    """`emo-rt train-evaluator`: train the label network and/or (`part`) the identity embedding of the
    evaluator in `out` (default: the one shipped in the package), or with `figures_only` re-score it.
    `identity_data`: more (shards, corpus) pairs whose train-split identities the embedding learns.
    The run works on a copy of `out` that replaces it at the end: an error or a signal leaves it as it was."""
    cv2.setNumThreads(1)
    out = Path(out) if out is not None else WEIGHTS_DIR
    held_out = HeldOutData(data, corpus)
    with atomic_directory(out) as staging:
        if out.is_dir():
            shutil.copytree(out, staging, dirs_exist_ok=True)  # what this run does not retrain stays
        if figures_only:
            return write_card(staging, held_out, json.loads((staging / "training.json").read_text()))
        if part in ("all", "labels"):
            result = train(Path(data), Path(corpus), staging, steps, batch, lr, seed, progress=progress)
        else:
            result = json.loads((staging / "training.json").read_text())
        if part in ("all", "identity"):
            extra = [HeldOutData(shards, c) for shards, c in identity_data]
            embedder, result["identity"] = train_identity([held_out, *extra], identity_steps, 128, 3e-3, seed,
                                                          progress=progress)
            embedder.save_pretrained(staging)
            result = write_card(staging, held_out, result)
        return result
