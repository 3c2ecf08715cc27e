"""Package a trained model directory as a shipped model: fp16 weights, the scheduler it was trained
with, its training summaries, under a size limit; written to a temporary directory and renamed into
place, so an interrupted run never leaves a half model behind.

    emo-rt ship runs/tiny emo_rt/default_model [--max-mb 25]

RUN is the run directory of `emo-rt train` (its last finished stage's model is shipped; stage{k}/model/training.json
of every stage is summarised into training.json).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import torch

from emo_rt.errors import EmoError
from emo_rt.io.files import atomic_directory, write_json_atomic
from emo_rt.models import EmoModel
from emo_rt.pipeline import RENDER_FILE


def stage_summaries(run_dir: Path) -> list[dict]:
    """Per stage: steps, global batch, processes, median step time, and `step_seconds`: the sum of
    the step times in its log.csv, i.e. its training time over every resumed run (a stage's
    training.json only knows the seconds of its last run)."""
    rows = []
    for stage in range(5):
        info_path = run_dir / f"stage{stage}" / "model" / "training.json"
        if not info_path.is_file():
            continue
        info = json.loads(info_path.read_text())
        row = {key: info.get(key) for key in ("stage", "steps", "global_batch", "processes", "median_step_s",
                                              "seconds_this_run", "precision", "data", "machine")}
        log_path = run_dir / f"stage{stage}" / "log.csv"
        if log_path.is_file():
            with log_path.open(newline="") as f:
                row["step_seconds"] = round(sum(float(r["step_time_s"]) for r in csv.DictReader(f)), 1)
        rows.append(row)
    return rows


def ship(run_dir: str | Path, out_dir: str | Path, max_mb: float = 25.0, stage: int | None = None) -> Path:
    """The model of `stage` (default: the last finished one) of `run_dir` as a shipped model in `out_dir`."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if stage is None:
        finished = [k for k in range(5) if (run_dir / f"stage{k}" / "model" / "training.json").is_file()]
        stage = finished[-1] if finished else 3
    source = run_dir / f"stage{stage}" / "model"
    if not (source / "training.json").is_file():
        raise EmoError(f"{source} is not a finished stage {stage} model (no training.json): finish training first")
    model = EmoModel.from_pretrained(source)
    info = json.loads((source / "training.json").read_text())
    summary = {"recipe": info["recipe"], "stages": stage_summaries(run_dir), "source": str(source)}
    with atomic_directory(out_dir) as partial:
        model.save_pretrained(partial, dtype=torch.float16)
        shutil.copytree(source / "scheduler", partial / "scheduler")
        write_json_atomic(partial / "training.json", summary)
        if (source / RENDER_FILE).is_file():  # the settings the model was made to render with
            shutil.copy2(source / RENDER_FILE, partial / RENDER_FILE)
        if (out_dir / "README.md").is_file():  # the card (emo-rt model-card) is kept until rewritten
            shutil.copy2(out_dir / "README.md", partial / "README.md")
        size_mb = sum(f.stat().st_size for f in partial.rglob("*") if f.is_file()) / 2**20
        if size_mb > max_mb:
            raise EmoError(f"the shipped model would be {size_mb:.1f} MB, over the {max_mb:g} MB limit")
    print(f"shipped {source} -> {out_dir} ({size_mb:.1f} MB, fp16)")
    return out_dir
