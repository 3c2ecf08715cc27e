"""Pre-flight of a training stage: every check that can fail, done before any work.

`plan(recipe, stage, data, out, resume)` returns a `Plan` or raises one `EmoError` line: the recipe,
the data directory, the model the stage starts from, the process count, existing checkpoints and,
on resume, that the recipe still matches the checkpoint's.

Run layout (OUT is shared by the stages; stage k starts from OUT/stage{k-1}/model):

    OUT/stage{k}/model/          EmoModel.save_pretrained + scheduler/ (+ training.json)
    OUT/stage{k}/checkpoints/    step-XXXXXXXX/ (see checkpoint.py)
    OUT/stage{k}/log.csv         one row per step; loss.png; samples/step-XXXXXXXX.png
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from emo_rt.models.migration import is_model_dir
from emo_rt.training import checkpoint as ckpt
from emo_rt.training.recipe import Recipe, TrainingError, load_recipe

STAGES = (0, 1, 2, 3, 4)
# recipe keys that may change between a checkpoint and its resume (they do not change the maths)
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "log_every", "sample_every", "num_workers"}


@dataclass(frozen=True)
class StagePaths:
    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    @property
    def loss_png(self) -> Path:
        return self.root / "loss.png"

    @property
    def samples(self) -> Path:
        return self.root / "samples"


def stage_paths(out_dir: str | Path, stage: int) -> StagePaths:
    return StagePaths(Path(out_dir) / f"stage{stage}")


@dataclass(frozen=True)
class Plan:
    """Everything checked before work starts."""

    recipe: Recipe
    stage: int
    data_dirs: tuple[Path, ...]  # shard folders (`emo-rt preprocess`), trained on together
    out_dir: Path
    paths: StagePaths
    start_model: Path | None  # the previous stage's output (None: build from the preset)
    checkpoint: Path | None  # resume from here


def plan(recipe_path: str | Path, stage: int, data_dirs, out_dir: str | Path, resume: bool) -> Plan:
    """All checks that can fail before any work, each a one-line EmoError."""
    recipe = load_recipe(recipe_path)
    if stage not in STAGES:
        raise TrainingError(f"--stage must be one of {', '.join(map(str, STAGES))}, got {stage}")
    _check_stage_section(recipe, stage)
    data_dirs = tuple(Path(d) for d in ([data_dirs] if isinstance(data_dirs, (str, Path)) else data_dirs))
    out_dir = Path(out_dir)
    if not data_dirs:
        raise TrainingError("--data: give at least one shard folder")
    for data_dir in data_dirs:
        _check_data(data_dir)
    _check_imports(recipe, stage)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    batch = recipe.stage(stage).batch_size
    if batch % world:
        raise TrainingError(f"stage{stage}.batch_size {batch} does not split evenly over {world} "
                            "processes: the recipe's batch size is the global batch")
    paths = stage_paths(out_dir, stage)
    return Plan(recipe, stage, data_dirs, out_dir, paths, _start_model(recipe, stage, out_dir),
                _checkpoint(recipe, stage, paths, resume))


def _check_stage_section(recipe: Recipe, stage: int) -> None:
    section = recipe.stage(stage)
    if stage == 0 and recipe.model != "tiny":
        raise TrainingError("stage 0 trains the tiny VAE only; sd15 recipes use SD's VAE (init.vae)")
    if stage == 0 and section.crop:
        config = recipe.model_config()
        if section.crop % config.vae.downsample_factor or section.crop > config.resolution:
            raise TrainingError(f"stage0.crop must be a multiple of {config.vae.downsample_factor} and at most "
                                f"{config.resolution}, got {section.crop}")


def _check_data(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise TrainingError(f"data directory {data_dir} not found")
    if not (data_dir / "index.json").is_file():
        raise TrainingError(f"{data_dir} has no index.json: point --data at the output of `emo-rt preprocess`")


def _check_imports(recipe: Recipe, stage: int) -> None:
    for name in {1: ("vae", "sd15_unet"), 2: ("animatediff",)}.get(stage, ()):
        source = getattr(recipe.init, name)
        if source is not None and not Path(source).exists():
            raise TrainingError(f"init.{name}: {source} not found")


def _start_model(recipe: Recipe, stage: int, out_dir: Path) -> Path | None:
    """The previous stage's output; None for stage 0 and for an sd15 stage 1 (SD's VAE, no stage 0)."""
    if stage == 0 or (stage == 1 and recipe.init.vae is not None):
        return None
    start = stage_paths(out_dir, stage - 1).model
    if is_model_dir(start):
        return start
    if stage == 1 and recipe.stage0 is None:
        raise TrainingError(f"{start} is not a model directory and this recipe has no stage0: "
                            "set init.vae to a diffusers AutoencoderKL directory")
    raise TrainingError(f"stage {stage} starts from stage {stage - 1}'s output, but {start} is "
                        f"not a model directory: run --stage {stage - 1} first (or finish it with --resume)")


def _checkpoint(recipe: Recipe, stage: int, paths: StagePaths, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: start fresh); refuses to overwrite one without --resume
    and to resume one made with another recipe."""
    if not resume:
        if ckpt.list_checkpoints(paths.checkpoints):
            raise TrainingError(f"{paths.root} already has checkpoints: pass --resume to continue, "
                                "or choose another --out")
        return None
    checkpoint = ckpt.latest_checkpoint(paths.checkpoints, warn=lambda m: print(m, file=sys.stderr))
    if checkpoint is None:
        return None
    manifest = json.loads((checkpoint / ckpt.MANIFEST).read_text())
    change = _first_difference(recipe_fingerprint(recipe, stage), manifest["recipe"]) if "recipe" in manifest else None
    if change:
        raise TrainingError(f"{checkpoint} was made with a different recipe ({change}): "
                            "resume with the same recipe, or start a new --out")
    if manifest["step"] > recipe.stage(stage).steps:
        raise TrainingError(f"{checkpoint} is past the recipe's {recipe.stage(stage).steps} steps")
    return checkpoint


def recipe_fingerprint(recipe: Recipe, stage: int) -> dict:
    """The recipe values a resumed run must share with its checkpoint."""
    data = recipe.to_dict()
    section = {k: v for k, v in data[f"stage{stage}"].items() if k not in RESUMABLE_CHANGES}
    shared = ("model", "model_overrides", "seed", "init", "diffusion", "loss")
    return {**{key: data[key] for key in shared}, f"stage{stage}": section}


def _first_difference(a, b, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    return None if json.dumps(a) == json.dumps(b) else f"{where} ({json.dumps(b)} -> {json.dumps(a)})"
