"""Train the face evaluator (emo_rt/eval/evaluator.py) on a synthetic corpus's train split: shard
crops in, sidecar curves (mouth, lip width, brows, blink, head pose) as targets, with degradations
(blur, rescale, noise, JPEG, colour, small shifts) so it also reads generated frames. Writes the
weights, config and a card (README.md) with validation (val split) and test-split figures.

    python -m emo_rt.training.train_evaluator --data corpus/shards --corpus corpus/synth \
        --out emo_rt/eval/weights [--steps 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from emo_rt.eval.data import LABELS, HeldOutData
from emo_rt.eval.evaluator import WEIGHTS_DIR, Evaluator, EvaluatorConfig, FaceEvaluator, crop_resize, to_tensor
from emo_rt.eval.metrics import pearson


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
    """(L,) mean over clips of each label's Pearson r."""
    rs, start = [], 0
    for n in lengths:
        rs.append([pearson(pred[start:start + n, j], truth[start:start + n, j]) for j in range(truth.shape[1])])
        start += n
    return np.asarray(rs).mean(0)


def figures(evaluator: Evaluator, frames: np.ndarray, labels: np.ndarray, lengths: list[int]) -> dict:
    pred = evaluator.predict(frames)
    r = per_clip_r(pred, labels, lengths)
    mae = np.abs(pred - labels).mean(0)
    return {name: {"r": round(float(r[j]), 4), "mae": round(float(mae[j]), 4)} for j, name in enumerate(LABELS)}


def train(data_dir: Path, corpus_dir: Path, out: Path, steps: int, batch: int, lr: float, seed: int,
          progress: bool = True) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

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
    loss_fn = nn.SmoothL1Loss(beta=0.1, reduction="none")
    weights = torch.tensor(config.loss_weights)
    history = []
    started = time.perf_counter()
    bar = Progress(TextColumn("train evaluator"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), disable=not progress)
    with bar:
        task = bar.add_task("steps", total=steps, loss="")
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
    evaluator = Evaluator(network)
    test = load_split(data, "test", config)
    result = {
        "data": str(data_dir), "corpus": str(corpus_dir),
        "train_clips": len(data.entries("train")), "train_frames": int(len(train_frames)),
        "val_clips": len(val[2]), "test_clips": len(test[2]),
        "steps": steps, "batch": batch, "lr": lr, "seed": seed, "threads": torch.get_num_threads(),
        "train_seconds": round(seconds, 1), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__, "parameters": sum(p.numel() for p in network.parameters()),
        "val": figures(evaluator, *val), "test": figures(evaluator, *test), "history": history,
    }
    evaluator = Evaluator(FaceEvaluator(EvaluatorConfig(training={k: result[k] for k in (
        "train_clips", "train_frames", "steps", "batch", "lr", "seed", "train_seconds")})))
    evaluator.network.load_state_dict(network.state_dict())
    evaluator.save_pretrained(out)
    # the shipped fp16 weights are what the figures below are of
    shipped = Evaluator.from_pretrained(out)
    result["val"], result["test"] = figures(shipped, *val), figures(shipped, *test)
    (out / "training.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "README.md").write_text(card(result))
    return result


def card(result: dict) -> str:
    rows = "\n".join(f"| {name} | {result['val'][name]['r']:.3f} | {result['test'][name]['r']:.3f} | "
                     f"{result['test'][name]['mae']:.3f} |" for name in LABELS)
    return f"""# Face evaluator (emo-rt eval)

A {result['parameters'] / 1e6:.2f}M-parameter CNN (`emo_rt/eval/evaluator.py`) reading, per frame of a
face-centred crop (the shard/render geometry: crop side = 1.6 x the clip's face box), mouth opening,
lip width, brow raise, blink (0..1 / relative width, as in the synthetic corpus's sidecars) and head
yaw, pitch, roll (degrees). Input: the frame area-resized to 64x64. Weights stored fp16.

- Training data: the **train split only** of `{result['corpus']}` ({result['train_clips']} clips,
  {result['train_frames']} frames, shards `{result['data']}`), with blur / rescale / noise / JPEG /
  colour / shift degradations so it also reads generated frames.
- {result['steps']} steps of batch {result['batch']}, AdamW one-cycle lr {result['lr']}, seed {result['seed']},
  {result['threads']} CPU thread(s): {result['train_seconds'] / 60:.1f} min on this project's 2-core CPU box
  (shared with other jobs), torch {result['torch']}.
- Made with: `python -m emo_rt.training.train_evaluator --data {result['data']} --corpus {result['corpus']} \\
  --out emo_rt/eval/weights --steps {result['steps']} --seed {result['seed']}`

Figures of the shipped (fp16) weights on real held-out videos: Pearson r per clip, averaged over the
{result['val_clips']} val and {result['test_clips']} test clips, and the test mean absolute error in the label's units.
The mouth-opening r on test videos must be >= 0.9 (tests/eval checks it on a freshly generated corpus).

| label | val r | test r | test MAE |
| --- | --- | --- | --- |
{rows}

Blink and pose are not driven by the audio in the corpus, so `emo-rt eval` uses them for the oracle
row and for head speed (from the pose), not as lip-sync scores.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emo_rt.training.train_evaluator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="preprocessed shards of a synthetic corpus")
    parser.add_argument("--corpus", required=True, help="the synthetic corpus folder (clips/<id>.json sidecars)")
    parser.add_argument("--out", default=str(WEIGHTS_DIR), help="default: the weights shipped in the package")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    result = train(Path(args.data), Path(args.corpus), Path(args.out), args.steps, args.batch, args.lr, args.seed,
                   progress=not args.quiet)
    print(f"wrote {args.out}: test mouth_open r {result['test']['mouth_open']['r']:.3f} "
          f"in {result['train_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
