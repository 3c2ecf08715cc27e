"""Run logs: a CSV row per step (loss, lr, ...), a loss-curve PNG, and contact sheets of samples."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from emo_rt.io import preview
from emo_rt.io.files import atomic_path


class StepLog:
    """`log.csv` of one stage run. On resume from step k the rows after k are dropped, so the file
    holds one unbroken curve."""

    def __init__(self, path: str | Path, columns: list[str], resume_step: int | None):
        self.path = Path(path)
        self.columns = columns
        rows = self.read() if resume_step is not None and self.path.is_file() else []
        rows = [r for r in rows if int(r["step"]) <= (resume_step or 0)]
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")

    def append(self, row: dict) -> None:
        self._writer.writerow({k: _format(v) for k, v in row.items()})
        self._file.flush()

    def read(self) -> list[dict]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def close(self) -> None:
        self._file.close()


def _format(value) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # exact round trip
    return str(value)


def read_losses(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) from a log.csv."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return (np.array([int(r["step"]) for r in rows]), np.array([float(r["loss"]) for r in rows]))


def plot_losses(csv_path: str | Path, png_path: str | Path, title: str) -> None:
    """Loss (raw and smoothed, log scale) and learning rate against step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with Path(csv_path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    lr = np.array([float(r["lr"]) for r in rows])
    span = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(span) / span, mode="valid")
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.09, 0.11, 0.8, 0.8))
    ax.plot(steps, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
    ax.plot(steps[span - 1:], smooth, color="tab:blue", linewidth=1.6, label=f"mean of {span}")
    if np.all(loss > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    lr_ax = ax.twinx()
    lr_ax.plot(steps, lr, color="tab:orange", linewidth=1.0)
    lr_ax.set_ylabel("learning rate", color="tab:orange")
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")


def contact_sheet(images: torch.Tensor, path: str | Path) -> Path:
    """images (rows, columns, 3, H, W) in [-1, 1] -> one PNG grid (emo_rt.io.preview.contact_sheet)."""
    columns = images.shape[1]
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    frames = pixels.permute(0, 1, 3, 4, 2).flatten(0, 1).cpu().numpy()  # (rows * columns, H, W, 3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return preview.contact_sheet(frames, path, columns=columns)
