"""Training recipes: typed dataclasses validated from YAML (unknown keys and wrong types are errors).

A recipe names the model preset, the diffusion parameterisation, the loss weighting and one
section per stage (`stage0` .. `stage4`). `load_recipe(path)` raises `RecipeError`, one line
naming the file, the key and what was wrong, before any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emo_rt.config import PRESETS, EmoConfig
from emo_rt.errors import EmoError, WeightsError
from emo_rt.parse import ParseError, parse


class RecipeError(EmoError):
    """A recipe file is missing, not YAML, or does not match the recipe dataclasses."""


class TrainingError(EmoError):
    """A training run cannot start or continue (missing data, previous stage, checkpoints...)."""


@dataclass(frozen=True)
class InitRecipe:
    """Pretrained sources (sd15 scale). Paths are read when the stage that uses them starts."""

    sd15_unet: str | None = None  # stage 1: SD1.5 UNet -> Backbone + ReferenceNet 2D layers
    animatediff: str | None = None  # stage 2: AnimateDiff motion modules -> temporal modules
    vae: str | None = None  # stage 1 without a stage 0: a diffusers AutoencoderKL directory (SD's VAE)


@dataclass(frozen=True)
class DiffusionRecipe:
    """diffusers DDPMScheduler arguments; saved beside the model as scheduler/scheduler_config.json."""

    prediction_type: str = "epsilon"  # "epsilon", "v_prediction" or "sample" (the clean latents)
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012

    def __post_init__(self) -> None:
        _choice("prediction_type", self.prediction_type, ("epsilon", "v_prediction", "sample"))
        _choice("beta_schedule", self.beta_schedule, ("linear", "scaled_linear", "squaredcos_cap_v2"))
        _positive("num_train_timesteps", self.num_train_timesteps)


@dataclass(frozen=True)
class LossRecipe:
    """Per-pixel loss weight 1 + face_weight * face + mouth_weight * (lower half of the face box)
    + brow_weight * (upper half).

    The face mask is the clip's face box; its lower half holds the mouth, its upper half the brows,
    small features that otherwise drown in the rest of the image. Each sample's
    loss is normalised by its weight sum.
    """

    face_weight: float = 1.0
    mouth_weight: float = 3.0
    brow_weight: float = 0.0

    def __post_init__(self) -> None:
        _non_negative("face_weight", self.face_weight)
        _non_negative("mouth_weight", self.mouth_weight)
        _non_negative("brow_weight", self.brow_weight)


@dataclass(frozen=True)
class StageRecipe:
    """What every stage has: schedule, optimiser, precision, checkpoint and log cadence."""

    steps: int
    batch_size: int  # global: split evenly over the processes (torchrun); the same recipe trains the same
    lr: float
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # after warm-up: "constant" or "cosine" (to 10% at the end)
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    ema_decay: float = 0.0  # 0 = no EMA; else the output holds EMA weights (decay min(this, (s+1)/(s+10)))
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; CPU: AVX-512 bf16, GPU: Ampere+)
    gradient_checkpointing: bool = False  # recompute Backbone layers in backward (sd15 memory)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10  # progress bar refresh (the CSV gets every step; loss.png at checkpoints)
    sample_every: int = 500  # contact sheet of denoised samples; 0 = only at the end
    num_workers: int = 0  # DataLoader workers per process

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            _positive(name, getattr(self, name))
        for name in ("warmup_steps", "grad_clip", "weight_decay", "sample_every", "num_workers"):
            _non_negative(name, getattr(self, name))
        _positive("lr", self.lr)
        _choice("precision", self.precision, ("fp32", "bf16"))
        _choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")


@dataclass(frozen=True)
class VAEStageRecipe(StageRecipe):
    """Stage 0: AutoencoderKL on corpus frames."""

    kl_weight: float = 1e-6  # times KL summed over latent elements, per image pixel (LDM's weighting)
    crop: int = 0  # train on random crops of this side (the VAE is convolutional; 0 = whole frames)
    scaling_samples: int = 512  # frames whose latents set the VAE's scaling_factor (1 / std) at the end

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative("kl_weight", self.kl_weight)
        _non_negative("crop", self.crop)
        _positive("scaling_samples", self.scaling_samples)


@dataclass(frozen=True)
class DenoiseStageRecipe(StageRecipe):
    """Stages 1-3: noise prediction. Dropped conditions are zero tensors at the Backbone's inputs
    (reference_features, audio_tokens), which is also what guidance uses as "unconditional"."""

    reference_dropout: float = 0.05
    audio_dropout: float = 0.05  # stages 2-3
    zero_motion_prob: float = 0.1  # stages 2-3: a clip's first window, with zero motion latents
    sample_steps: int = 20  # DDIM steps for the contact sheet

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("reference_dropout", "audio_dropout", "zero_motion_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        _positive("sample_steps", self.sample_steps)


@dataclass(frozen=True)
class DistillStageRecipe(DenoiseStageRecipe):
    """Stage 4: guidance and step distillation (training/distill.py)."""

    teacher_steps: int = 8  # the guided teacher's DDIM steps ("trailing" spacing)
    student_steps: int = 2  # the student's single-pass steps; teacher_steps must be a multiple
    guidance: float = 3.5  # the teacher's guidance scale

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("teacher_steps", self.teacher_steps)
        _positive("student_steps", self.student_steps)
        if self.teacher_steps % self.student_steps:
            raise ValueError(f"teacher_steps {self.teacher_steps} must be a multiple of student_steps "
                             f"{self.student_steps}")
        _non_negative("guidance", self.guidance)


@dataclass(frozen=True)
class Recipe:
    model: str  # a preset of emo_rt.config.PRESETS
    # EmoConfig fields replaced in the preset (nested like config.json), e.g. {resolution: 64}
    model_overrides: dict = field(default_factory=dict)
    seed: int = 0
    init: InitRecipe = field(default_factory=InitRecipe)
    diffusion: DiffusionRecipe = field(default_factory=DiffusionRecipe)
    loss: LossRecipe = field(default_factory=LossRecipe)
    stage0: VAEStageRecipe | None = None  # tiny only; sd15 uses SD's VAE (init.vae)
    stage1: DenoiseStageRecipe | None = None
    stage2: DenoiseStageRecipe | None = None
    stage3: DenoiseStageRecipe | None = None
    stage4: DistillStageRecipe | None = None

    def __post_init__(self) -> None:
        _choice("model", self.model, tuple(PRESETS))
        self.model_config()  # overrides are checked now, not when a stage starts

    def model_config(self) -> EmoConfig:
        """The preset with `model_overrides` applied."""
        data = _merge(PRESETS[self.model]().to_dict(), self.model_overrides, "model_overrides")
        try:
            return EmoConfig.from_dict(data)
        except WeightsError as err:
            raise ValueError(str(err).replace("config", "model_overrides", 1)) from None

    def stage(self, number: int) -> StageRecipe:
        section = getattr(self, f"stage{number}", None) if number in (0, 1, 2, 3, 4) else None
        if section is None:
            raise RecipeError(f"this recipe has no stage{number} section")
        return section

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _merge(base: dict, overrides: dict, where: str) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if key not in base:
            raise ValueError(f"{where}: unknown key {key!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{key}: expected a mapping")
            merged[key] = _merge(base[key], value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file (or a shipped recipe by name: "tiny", "sd15"); any problem
    is one `RecipeError` line."""
    path = Path(path)
    shipped = Path(__file__).parent / "recipes" / f"{path}.yaml"
    if not path.is_file() and path.suffix == "" and len(path.parts) == 1 and shipped.is_file():
        path = shipped
    if not path.is_file():
        raise RecipeError(f"recipe {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise RecipeError(f"recipe {path} is not valid YAML{line}: {getattr(err, 'problem', err)}") from None
    try:
        return parse(Recipe, data, "")
    except ParseError as err:
        raise RecipeError(f"recipe {path}: {err}") from None


def recipe_from_dict(data: dict) -> Recipe:
    """Validate a plain dict (as YAML would give) into a Recipe."""
    try:
        return parse(Recipe, data, "")
    except ParseError as err:
        raise RecipeError(f"recipe: {err}") from None


def _choice(name: str, value, options: tuple) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(str, options))}; got {value!r}")


def _positive(name: str, value) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _non_negative(name: str, value) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
