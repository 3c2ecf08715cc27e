"""Training checkpoints: a model directory plus the state to continue exactly, committed atomically.

Layout: CHECKPOINTS/step-00001000/{model/, state.pt, manifest.json}. `model/` holds the raw (not EMA)
weights and, from stage 1 on, `scheduler/`, so it renders as it is (`--weights`). A checkpoint is written into
`.step-00001000.partial/` (`emo_rt.io.files.atomic_directory`), `manifest.json` (every file's size)
last, fsynced, then renamed into place; a directory with a missing or disagreeing manifest is never loaded, the one before it is.
`state.pt` holds only tensors and plain containers and is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from emo_rt.io.files import atomic_directory
from emo_rt.models import EmoModel

PREFIX = "step-"
MANIFEST = "manifest.json"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def save_checkpoint(directory: str | Path, step: int, model: EmoModel, state: dict, keep: int,
                    meta: dict | None = None, scheduler: SchedulerMixin | None = None) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep` checkpoints.
    `meta` (plain JSON) goes into manifest.json, readable without loading the state; `scheduler` (the
    training noise schedule) into model/scheduler/."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)  # the same step may be written again (after a resume)
    with atomic_directory(final) as partial:
        model.save_pretrained(partial / "model")
        if scheduler is not None:
            scheduler.save_pretrained(partial / "model" / "scheduler")
        torch.save(state, partial / "state.pt")
        files = sorted(p for p in partial.rglob("*") if p.is_file())
        manifest = {"step": step, **(meta or {}),
                    "files": {str(p.relative_to(partial)): p.stat().st_size for p in files}}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Committed checkpoint directories, oldest first (partial ones are never listed)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def verify(checkpoint: Path) -> str | None:
    """None if the checkpoint is complete, else why not."""
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        return "no manifest.json"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"unreadable manifest.json ({err})"
    for name, size in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {size}"
    return None


def latest_checkpoint(directory: str | Path, warn=print) -> Path | None:
    """The newest complete checkpoint; incomplete ones are reported through `warn` and skipped."""
    for checkpoint in reversed(list_checkpoints(directory)):
        problem = verify(checkpoint)
        if problem is None:
            return checkpoint
        warn(f"skipping checkpoint {checkpoint}: {problem}")
    return None


def load_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
