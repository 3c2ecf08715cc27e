"""The training loop behind `emo-rt train`: one stage of a recipe, resumable, DDP under torchrun.

`train(recipe_path, stage, data_dir, out_dir, resume)` checks everything it needs first (recipe,
data, the previous stage's model, existing checkpoints) and fails with one `EmoError` line before
any work; then it builds caches, trains, and returns the stage's output model directory.

Run layout (OUT is shared by the stages; stage k starts from OUT/stage{k-1}/model):

    OUT/stage{k}/model/          EmoModel.save_pretrained + scheduler/ (+ training.json)
    OUT/stage{k}/checkpoints/    step-XXXXXXXX/ (see checkpoint.py)
    OUT/stage{k}/log.csv         one row per step; loss.png; samples/step-XXXXXXXX.png

Launch: `python -m emo_rt.training.trainer ...` or `torchrun --nproc_per_node N -m
emo_rt.training.trainer ...` (gloo on CPU, nccl on GPUs). A recipe's batch_size is the global batch:
each of N processes takes batch_size / N of it, so any N trains the same samples in the same order.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from emo_rt.config import EmoConfig
from emo_rt.errors import EmoError
from emo_rt.models import EmoModel
from emo_rt.models.audio import grow_projector_rows
from emo_rt.models.emo import load_part
from emo_rt.models.weights import import_animatediff, import_sd15_unet, zero_init_new_branches
from emo_rt.training import checkpoint as ckpt
from emo_rt.training.command import add_arguments
from emo_rt.training.data.shards import ShardIndex
from emo_rt.training.logs import StepLog, contact_sheet, plot_losses
from emo_rt.training.recipe import Recipe, TrainingError, load_recipe
from emo_rt.training.data.datasets import ClipWindowDataset, FramePairDataset
from emo_rt.training.stage_data import (BatchKeys, KeyedSamples, SampleStream, audio_cache_dir, collate, is_complete,
                                        latent_cache_dir, write_caches)
from emo_rt.training.stages import Stage, build_stage, make_inert_temporal

# recipe keys that may change between a checkpoint and its resume (they do not change the maths)
_RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "log_every", "sample_every", "num_workers"}
PREVIEW_SAMPLES = {0: 8, 1: 4, 2: 2, 3: 2}


# ---- paths and checks -------------------------------------------------------------------------
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


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and all((path / f"{p}.safetensors").is_file() for p in EmoModel.PARTS)


@dataclass(frozen=True)
class Plan:
    """Everything checked before work starts."""

    recipe: Recipe
    stage: int
    data_dir: Path
    out_dir: Path
    paths: StagePaths
    start_model: Path | None  # the previous stage's output (None: build from the preset)
    checkpoint: Path | None  # resume from here


def recipe_fingerprint(recipe: Recipe, stage: int) -> dict:
    """The recipe values a resumed run must share with its checkpoint."""
    data = recipe.to_dict()
    section = {k: v for k, v in data[f"stage{stage}"].items() if k not in _RESUMABLE_CHANGES}
    return {"model": data["model"], "model_overrides": data["model_overrides"], "seed": data["seed"], "init": data["init"], "diffusion": data["diffusion"],
            "loss": data["loss"], f"stage{stage}": section}


def _first_difference(a, b, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    return None if json.dumps(a) == json.dumps(b) else f"{where} ({json.dumps(b)} -> {json.dumps(a)})"


def plan(recipe_path: str | Path, stage: int, data_dir: str | Path, out_dir: str | Path, resume: bool) -> Plan:
    """All checks that can fail before any work, each a one-line EmoError."""
    recipe = load_recipe(recipe_path)
    if stage not in (0, 1, 2, 3):
        raise TrainingError(f"--stage must be 0, 1, 2 or 3, got {stage}")
    stage_recipe = recipe.stage(stage)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TrainingError(f"data directory {data_dir} not found")
    if not (data_dir / "index.json").is_file():
        raise TrainingError(f"{data_dir} has no index.json: point --data at the output of `emo-rt preprocess`")
    out_dir = Path(out_dir)
    paths = stage_paths(out_dir, stage)

    start_model = None
    start_from = getattr(stage_recipe, "start_from", None)
    if stage == 0 and recipe.model != "tiny":
        raise TrainingError("stage 0 trains the tiny VAE only; sd15 recipes use SD's VAE (init.vae)")
    if stage == 0 and stage_recipe.crop:
        config = recipe.model_config()
        if stage_recipe.crop % config.vae.downsample_factor or stage_recipe.crop > config.resolution:
            raise TrainingError(f"stage0.crop must be a multiple of {config.vae.downsample_factor} and at most "
                                f"{config.resolution}, got {stage_recipe.crop}")
    if start_from is not None:
        start_model = Path(start_from)
        if not is_model_dir(start_model):
            raise TrainingError(f"stage{stage}.start_from: {start_model} is not a model directory")
    elif stage >= 1 and not (stage == 1 and recipe.init.vae is not None):  # sd15 stage 1: SD's VAE, no stage 0
        start_model = stage_paths(out_dir, stage - 1).model
        if not is_model_dir(start_model):
            if stage == 1 and recipe.stage0 is None:
                raise TrainingError(f"{start_model} is not a model directory and this recipe has no stage0: "
                                    "set init.vae to a diffusers AutoencoderKL directory")
            raise TrainingError(f"stage {stage} starts from stage {stage - 1}'s output, but {start_model} is "
                                f"not a model directory: run --stage {stage - 1} first (or finish it with --resume)")
    used = {1: ("vae", "sd15_unet"), 2: ("animatediff",)}.get(stage, ())
    for name in used:
        source = getattr(recipe.init, name)
        if source is not None and not Path(source).exists():
            raise TrainingError(f"init.{name}: {source} not found")

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if stage_recipe.batch_size % world:
        raise TrainingError(f"stage{stage}.batch_size {stage_recipe.batch_size} does not split evenly over {world} "
                            "processes: the recipe's batch size is the global batch")

    checkpoint = None
    existing = ckpt.list_checkpoints(paths.checkpoints)
    if existing and not resume:
        raise TrainingError(f"{paths.root} already has checkpoints: pass --resume to continue, or choose another --out")
    if resume:
        checkpoint = ckpt.latest_checkpoint(paths.checkpoints, warn=lambda m: print(m, file=sys.stderr))
        if checkpoint is not None:
            saved = json.loads((checkpoint / ckpt.MANIFEST).read_text()).get("recipe")
            change = _first_difference(recipe_fingerprint(recipe, stage), saved) if saved else None
            if change:
                raise TrainingError(f"{checkpoint} was made with a different recipe ({change}): "
                                    "resume with the same recipe, or start a new --out")
            if json.loads((checkpoint / ckpt.MANIFEST).read_text())["step"] > stage_recipe.steps:
                raise TrainingError(f"{checkpoint} is past the recipe's {stage_recipe.steps} steps")
    return Plan(recipe, stage, data_dir, out_dir, paths, start_model, checkpoint)


# ---- distributed ------------------------------------------------------------------------------
@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_env(cls) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        if world > 1 and not torch_dist.is_initialized():
            torch_dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
        return cls(rank=int(os.environ.get("RANK", "0")), world_size=world, local_rank=local_rank,
                   local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))), device=device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return value
        value = value.detach().clone()
        torch_dist.all_reduce(value)
        return value / self.world_size

    def close(self) -> None:
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


# ---- model at the start of a stage --------------------------------------------------------------
def initial_model(plan: Plan, console: Console) -> EmoModel:
    """The stage's starting weights: the previous stage's output (or the preset), plus the stage's
    initialisation (zeroed new branches, inert temporal modules, pretrained imports)."""
    recipe, stage = plan.recipe, plan.stage
    torch.manual_seed(recipe.seed)
    config = recipe.model_config()
    if plan.start_model is not None:
        model = start_model(plan.start_model, config, stage, console,
                            trains_2d=stage == 1 or recipe.stage(stage).train_backbone)
    else:
        model = EmoModel(config)
    if stage == 1 and trained_through(plan.start_model) < 1:  # a stage-1 continuation keeps its branches
        if recipe.init.vae is not None:  # sd15: SD's VAE instead of a stage 0
            _import_vae(model, Path(recipe.init.vae))
        if recipe.init.sd15_unet is not None:
            console.print(import_sd15_unet(model, recipe.init.sd15_unet).summary())
        zero_init_new_branches(model)
        make_inert_temporal(model)
    if stage == 2 and recipe.init.animatediff is not None:
        console.print(import_animatediff(model, recipe.init.animatediff).summary())
    return model


def trained_through(directory: Path | None) -> int:
    """The last stage that trained the model in `directory` (its training.json), -1 if none did."""
    info = directory / "training.json" if directory is not None else None
    if info is None or not info.is_file():
        return -1
    return int(json.loads(info.read_text()).get("stage", -1))


# Config fields that shape only parts no stage before the named one trains: a stage may start from
# a model that differs from the recipe in them (a recipe that adds the prosody row or refits the
# speed buckets reuses the finished stages 0-1). Parts they reshape start from their seeded init.
FIRST_TRAINED_IN = {"audio.prosody": 2, "audio.prosody_hold": 2, "speed.bucket_centres": 3,
                    "speed.bucket_radii": 3}
_RESHAPES = {"audio.prosody": "audio_projector"}
_GROWS = {"audio.prosody_hold": "audio_projector"}  # keep the weights, new inputs read as zero
# Spatial attention added at more resolution levels: a stage that trains the Backbone's 2D layers
# (stage 1, or stage 2-3 with train_backbone) may start from a model without it. The new spatial
# transformers start as the identity (proj_out zero), so the grown model computes what the saved one did.
_ADDS_LAYERS = "unet.attention_levels"


def config_changes(saved: EmoConfig, wanted: EmoConfig) -> list[str]:
    """Dotted names of the fields that differ, the VAE's fitted scaling factor aside."""
    a, b = _flat(_without_scaling(saved)), _flat(_without_scaling(wanted))
    return [name for name in a if a[name] != b[name]]


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def start_model(directory: Path, config: EmoConfig, stage: int, console: Console,
                trains_2d: bool = False) -> EmoModel:
    """The previous stage's model, adopting the recipe's config where FIRST_TRAINED_IN allows
    (and, when the stage trains the Backbone's 2D layers, spatial attention at more levels)."""
    saved = EmoConfig.load(directory)
    changes = config_changes(saved, config)
    if not changes:
        return EmoModel.from_pretrained(directory)
    adds_attention = _ADDS_LAYERS in changes and trains_2d and _only_adds_levels(
        saved.unet.attention_levels, config.unet.attention_levels)
    refused = [c for c in changes if FIRST_TRAINED_IN.get(c, -1) < stage and not (
        c == _ADDS_LAYERS and adds_attention)]
    if refused:
        raise TrainingError(f"{directory} does not have the recipe's model config ({', '.join(refused)} "
                            "differ, and earlier stages trained what they shape)")
    more_rows = config.audio.num_feature_rows > saved.audio.num_feature_rows
    fresh = {_RESHAPES[c] for c in changes if c in _RESHAPES}
    fresh |= {_GROWS[c] for c in changes if c in _GROWS and not more_rows}
    grown = {_GROWS[c] for c in changes if c in _GROWS} - fresh  # dropping the row re-initialises
    config = dataclasses.replace(config, vae=dataclasses.replace(config.vae, scaling_factor=saved.vae.scaling_factor))
    model = EmoModel(config)
    for part in EmoModel.PARTS:
        path = directory / f"{part}.safetensors"
        if part in grown:  # only the audio projector grows (_GROWS)
            load_part(model.audio_projector, path,
                      adapt=lambda state: grow_projector_rows(state, config.audio, saved.audio.num_feature_rows))
        elif part in ("backbone", "reference_net") and adds_attention:
            load_part(getattr(model, part), path, adapt=lambda state, part=part: with_identity_attention(
                getattr(model, part), state))
        elif part not in fresh:
            load_part(getattr(model, part), path)
    reinit = f"; re-initialised: {', '.join(sorted(fresh))}" if fresh else ""
    reinit += "; new spatial attention starts as the identity" if adds_attention else ""
    reinit += f"; grown (new inputs zero): {', '.join(sorted(grown))}" if grown else ""
    console.print(f"stage {stage} adopts the recipe's {', '.join(changes)}{reinit}")
    return model.eval()


def _only_adds_levels(saved: tuple[bool, ...], wanted: tuple[bool, ...]) -> bool:
    return len(saved) == len(wanted) and all(w or not s for s, w in zip(saved, wanted))


def with_identity_attention(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` plus the spatial transformers `module` has and `state` lacks, taken from the module's
    own (seeded) init with proj_out zeroed: each new transformer returns its input."""
    grown = dict(state)
    for key, value in module.state_dict().items():
        layer = re.match(r"(.*\.attentions\.\d+)\.", key)
        if key in state or layer is None:
            continue  # a missing key outside a spatial transformer stays missing: load_part names it
        zero = key.startswith(f"{layer.group(1)}.proj_out.")
        grown[key] = torch.zeros_like(value) if zero else value
    return grown


def _without_scaling(config: EmoConfig) -> dict:
    data = config.to_dict()
    data["vae"].pop("scaling_factor")
    return data


def _import_vae(model: EmoModel, source: Path) -> None:
    from diffusers import AutoencoderKL

    if (source / "config.json").is_file():  # the VAE's own directory
        vae = AutoencoderKL.from_pretrained(source)
    elif (source / "vae" / "config.json").is_file():  # a pipeline directory
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
    else:
        raise TrainingError(f"init.vae: {source} is not a diffusers AutoencoderKL (or pipeline) directory")
    model.vae.load_state_dict(vae.state_dict())
    set_scaling_factor(model, float(vae.config.scaling_factor))


def set_scaling_factor(model: EmoModel, value: float) -> None:
    model.vae.register_to_config(scaling_factor=value)
    model.config = dataclasses.replace(model.config, vae=dataclasses.replace(model.config.vae, scaling_factor=value))


def apply_gradient_checkpointing(model: EmoModel) -> None:
    """Recompute the Backbone's resnets, spatial transformers and temporal modules in backward
    (state-dict keys unchanged: torch's checkpoint_wrapper strips its prefix)."""
    from diffusers.models.resnet import ResnetBlock2D
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl, apply_activation_checkpointing, checkpoint_wrapper)

    from emo_rt.models.temporal import TemporalModule
    from emo_rt.models.transformer import SpatialTransformer

    apply_activation_checkpointing(
        model.backbone, checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, CheckpointImpl.NO_REENTRANT),
        check_fn=lambda m: isinstance(m, (ResnetBlock2D, SpatialTransformer, TemporalModule)))


def parameters_in_graph(loss: torch.Tensor, model: torch.nn.Module) -> set[str]:
    """Names of the parameters `loss` depends on (walks the autograd graph, no backward)."""
    names = {id(p): n for n, p in model.named_parameters()}
    found, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) in names:
            found.add(names[id(variable)])
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


# ---- the trainer ------------------------------------------------------------------------------
def _lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


class Trainer:
    """One stage run. `on_backward(step, model)` (optional) is called after each backward, with the
    (DDP-averaged) gradients in place and before clipping: a hook for tests and diagnostics."""

    def __init__(self, plan: Plan, dist: Distributed, progress: bool = True, on_backward=None):
        self.plan, self.dist = plan, dist
        self.on_backward = on_backward
        self.model: EmoModel | None = None
        self.recipe = plan.recipe
        self.stage_recipe = plan.recipe.stage(plan.stage)
        self.console = Console(stderr=True, quiet=not dist.main)
        self.show_progress = progress and dist.main

    # -- setup --
    def datasets(self, model: EmoModel, stage: Stage) -> tuple[KeyedSamples, dict]:
        """The training samples (caches written first, by rank 0) and a fixed preview batch (from the
        val split when it has clips)."""
        config, p, seed = model.config, self.plan, self.recipe.seed
        index = ShardIndex(p.data_dir)
        if index.resolution != config.resolution:
            raise TrainingError(f"{p.data_dir} holds {index.resolution}px frames, the model needs "
                                f"{config.resolution}px: preprocess at --resolution {config.resolution}")
        latents = latent_cache_dir(p.data_dir, model) if p.stage >= 1 else None
        audio = audio_cache_dir(p.data_dir, model) if p.stage >= 2 else None
        self._write_caches(index, model, latents, audio)

        def make(split: str):
            if p.stage <= 1:
                return FramePairDataset(index, split, seed=seed, latent_cache=latents)
            return ClipWindowDataset(index, split, config.num_frames, config.num_motion_frames, stage.context,
                                     self.stage_recipe.zero_motion_prob, seed=seed, latent_cache=latents,
                                     audio_feature_cache=audio)

        try:
            train_set = make("train")
        except ValueError as err:  # no usable clips
            raise TrainingError(str(err)) from None
        try:
            preview_set = make("val")
        except ValueError:
            preview_set = train_set
        dataset = KeyedSamples(train_set, seed, p.stage, stage.draw)
        preview = KeyedSamples(preview_set, seed, 10 + p.stage, stage.draw)
        keys = [(i % len(preview), i) for i in range(PREVIEW_SAMPLES[p.stage])]
        return dataset, collate([preview[k] for k in keys])

    def _write_caches(self, index: ShardIndex, model: EmoModel, latents: Path | None, audio: Path | None) -> None:
        """Every rank encodes its share of the clips (rank r: clips r, r+W, ...); rank 0 marks the
        caches complete once all have finished."""
        dist = self.dist
        todo = [d for d in (latents, audio) if d is not None and not is_complete(d)]
        if not todo:
            return
        share = copy.copy(index)
        share.clips = index.clips[dist.rank::dist.world_size]
        frames = sum(c.num_frames for c in share.clips) * len(todo)
        with self._progress() as bar:
            task = bar.add_task("caches", total=frames, loss=float("nan"), rate=float("nan"))
            write_caches(share, model, latents, audio, dist.device, progress=lambda k: bar.advance(task, k),
                         mark_complete=False)
        dist.barrier()
        if dist.main:
            write_caches(index, model, latents, audio, dist.device)  # finds every clip done, marks complete
            self.console.print(f"caches written: {', '.join(str(d) for d in todo)}")
        dist.barrier()

    def _progress(self) -> Progress:
        return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.2f} it/s"),
                        TimeRemainingColumn(), console=self.console, disable=not self.show_progress)

    # -- run --
    def run(self) -> Path:
        p, r, dist = self.plan, self.stage_recipe, self.dist
        if dist.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # share the cores
            torch.set_num_threads(max(1, torch.get_num_threads() // dist.local_world_size))
        resume_state = ckpt.load_state(p.checkpoint) if p.checkpoint is not None else None
        if p.checkpoint is not None:
            model = EmoModel.from_pretrained(p.checkpoint / "model")
        else:
            model = initial_model(p, self.console)
        model.to(dist.device)
        self.model = model
        stage = build_stage(p.stage, model, self.recipe, crop=getattr(r, "crop", 0))
        dataset, preview_batch = self.datasets(model, stage)

        # what this stage trains: its parameter set, minus parameters the loss cannot reach
        if r.gradient_checkpointing:  # before naming parameters: the wrappers add a name component
            apply_gradient_checkpointing(model)
        intended = set(stage.parameter_names())
        for name, param in model.named_parameters():
            param.requires_grad_(name in intended)
        stream = SampleStream(len(dataset), self.recipe.seed, r.batch_size // dist.world_size, dist.world_size)
        start = int(resume_state["step"]) if resume_state else 0
        probe = self._to_device(collate([dataset[k] for k in stream.keys(start, dist.rank)]))
        reachable = parameters_in_graph(stage(probe)[0], model) & intended
        for name, param in model.named_parameters():
            param.requires_grad_(name in reachable)
        names = [n for n, _ in model.named_parameters() if n in reachable]
        params = [q for n, q in model.named_parameters() if n in reachable]
        count = sum(q.numel() for q in params)
        self.console.print(f"stage {p.stage}: training {count:,} parameters in {len(params)} tensors"
                           + (f" ({len(intended) - len(reachable)} of the stage's tensors cannot reach the loss "
                              "and stay frozen)" if len(intended) > len(reachable) else ""))

        module = stage
        if dist.world_size > 1:
            module = DistributedDataParallel(stage, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                                             forward_sync_buffers=False)  # buffers are constants
        optimizer = torch.optim.AdamW(params, lr=r.lr, betas=r.betas, weight_decay=r.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: _lr_factor(s, r.warmup_steps, r.steps, r.lr_schedule))
        ema = {n: q.detach().clone().float() for n, q in zip(names, params)} if r.ema_decay else {}
        if resume_state:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["lr_scheduler"])
            ema = {k: v.to(dist.device) for k, v in resume_state["ema"].items()}
            _set_rng_state(resume_state["rng"])
            self.console.print(f"resuming stage {p.stage} from {p.checkpoint} (step {start})")

        loader = DataLoader(dataset, batch_sampler=BatchKeys(stream, dist.rank, start, r.steps), collate_fn=collate,
                            num_workers=r.num_workers, persistent_workers=r.num_workers > 0)
        log = None
        if dist.main:
            p.paths.root.mkdir(parents=True, exist_ok=True)
            (p.paths.root / "recipe.json").write_text(json.dumps(self.recipe.to_dict(), indent=1) + "\n")
            extra = ["rec", "kl"] if p.stage == 0 else []
            log = StepLog(p.paths.log, ["step", "loss", "lr", "grad_norm", "step_time_s", "samples_per_s"] + extra,
                          resume_step=start if resume_state else None)

        global_batch = r.batch_size
        started = time.perf_counter()
        step_times: list[float] = []
        with self._progress() as bar:
            task = bar.add_task(f"stage {p.stage}", total=r.steps, completed=start, loss=float("nan"), rate=float("nan"))
            t0 = time.perf_counter()
            for step, batch in enumerate(loader, start=start):
                batch = self._to_device(batch)
                loss, stats = module(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.on_backward is not None:
                    self.on_backward(step, model)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, r.grad_clip or float("inf"))
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                if ema:  # decay warms up as in diffusers' EMAModel, so the init fades out fast
                    decay = min(r.ema_decay, (step + 2) / (step + 11))
                    with torch.no_grad():
                        for n, q in zip(names, params):
                            ema[n].lerp_(q.detach().float(), 1 - decay)
                mean_loss = dist.mean(loss.detach())
                stats = {k: dist.mean(v) for k, v in stats.items()}
                t1 = time.perf_counter()
                step_times.append(t1 - t0)
                done = step + 1
                if log is not None:
                    log.append({"step": done, "loss": float(mean_loss), "lr": lr, "grad_norm": float(grad_norm),
                                "step_time_s": round(t1 - t0, 4), "samples_per_s": round(global_batch / (t1 - t0), 3),
                                **{k: float(v) for k, v in stats.items()}})
                if done % r.log_every == 0 or done == r.steps:
                    recent = step_times[-r.log_every:]
                    bar.update(task, completed=done, loss=float(mean_loss), rate=len(recent) / sum(recent))
                if done % r.checkpoint_every == 0 or done == r.steps:
                    if dist.main:
                        if done != r.steps:  # _finish plots the last one
                            plot_losses(p.paths.log, p.paths.loss_png, f"stage {p.stage}")
                        state = {"step": done, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
                                 "ema": {k: v.cpu() for k, v in ema.items()}, "rng": _rng_state(),
                                 "data": {"seed": self.recipe.seed, "global_batch": global_batch,
                                          "next_position": done * global_batch}}  # in SampleStream order
                        ckpt.save_checkpoint(p.paths.checkpoints, done, model, state, r.keep_checkpoints,
                                             meta={"recipe": recipe_fingerprint(self.recipe, p.stage)},
                                             scheduler=getattr(stage, "scheduler", None))
                    dist.barrier()
                if dist.main and r.sample_every and done % r.sample_every == 0 and done != r.steps:
                    self._preview(stage, preview_batch, done)
                t0 = time.perf_counter()

        if dist.main:
            self._finish(model, stage, dataset, ema, names, preview_batch, time.perf_counter() - started, step_times)
        dist.barrier()
        if log is not None:
            log.close()
        return p.paths.model

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.dist.device, non_blocking=True) for k, v in batch.items()}

    def _preview(self, stage: Stage, batch: dict, step: int) -> Path:
        images = stage.sample(self._to_device(batch))
        return contact_sheet(images, self.plan.paths.samples / f"{ckpt.checkpoint_name(step)}.png")

    def _finish(self, model: EmoModel, stage: Stage, dataset: KeyedSamples, ema: dict, names: list[str], preview_batch: dict,
                seconds: float, step_times: list[float]) -> None:
        """Write the stage's output model directory (EMA weights when EMA is on), atomically."""
        p, r = self.plan, self.stage_recipe
        if ema:
            parameters = dict(model.named_parameters())
            with torch.no_grad():
                for n in names:
                    parameters[n].copy_(ema[n])
        if p.stage == 0:
            std = self._latent_std(stage, dataset)
            set_scaling_factor(model, 1.0 / std)
            self.console.print(f"VAE latent std {std:.4f}: scaling_factor = {1.0 / std:.5f}")
        self._preview(stage, preview_batch, r.steps)
        partial = p.paths.root / "model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        if p.stage >= 1:
            stage.scheduler.save_pretrained(partial / "scheduler")
        timing = sorted(step_times)
        info = {"stage": p.stage, "steps": r.steps,
                "trained_parameters": [n.replace("_checkpoint_wrapped_module.", "") for n in names], "recipe": self.recipe.to_dict(), "seconds_this_run": round(seconds, 1),
                "median_step_s": timing[len(timing) // 2] if timing else None,
                "global_batch": r.batch_size, "processes": self.dist.world_size}
        (partial / "training.json").write_text(json.dumps(info, indent=1) + "\n")
        if p.paths.model.exists():
            shutil.rmtree(p.paths.model)
        os.rename(partial, p.paths.model)
        plot_losses(p.paths.log, p.paths.loss_png, f"stage {p.stage}")
        self.console.print(f"stage {p.stage} done: {p.paths.model}")

    @torch.no_grad()
    def _latent_std(self, stage: Stage, dataset: KeyedSamples) -> float:
        """std of the VAE's latents (posterior mode) over `scaling_samples` whole train frames."""
        frames = KeyedSamples(dataset.base, self.recipe.seed, 20, None)
        count = self.stage_recipe.scaling_samples
        latents = []
        for i in range(0, count, 32):
            images = torch.stack([frames[(k % len(frames), k)]["target"] for k in range(i, min(count, i + 32))])
            latents.append(stage.model.vae.encode(images.to(self.dist.device)).latent_dist.mode().float().flatten())
        return float(torch.cat(latents).std())


def train(recipe_path: str | Path, stage: int, data_dir: str | Path, out_dir: str | Path, resume: bool = False,
          progress: bool = True) -> Path:
    """Train one stage; returns its output model directory (OUT/stage{k}/model)."""
    checked = plan(recipe_path, stage, data_dir, out_dir, resume)
    dist = Distributed.from_env()
    try:
        return Trainer(checked, dist, progress).run()
    finally:
        dist.close()


# ---- command line (the `emo-rt train` subcommand reuses these) ---------------------------------
def run(args: argparse.Namespace) -> int:
    path = train(args.recipe, args.stage, args.data, args.out, args.resume, progress=not args.no_progress)
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = add_arguments(argparse.ArgumentParser(prog="emo-rt train", description=__doc__.splitlines()[0])).parse_args(argv)
    try:
        return run(args)
    except EmoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
