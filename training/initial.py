"""The weights a stage starts from: the previous stage's output (emo_rt.models.migration) or the
preset, plus the stage's own initialisation (zeroed new branches and inert temporal modules for
stage 1, pretrained SD1.5 / AnimateDiff / VAE imports)."""

from __future__ import annotations

from pathlib import Path

import torch

from emo_rt.models import EmoModel
from emo_rt.models.migration import load_for_stage, set_scaling_factor
from emo_rt.models.weights import import_animatediff, import_sd15_unet, zero_init_new_branches
from emo_rt.training.plan import Plan
from emo_rt.training.recipe import TrainingError
from emo_rt.training.stages import make_inert_temporal


def initial_model(plan: Plan, say=print) -> EmoModel:
    """The stage's starting model; what it adopted or imported is reported through `say`."""
    recipe, stage = plan.recipe, plan.stage
    torch.manual_seed(recipe.seed)
    config = recipe.model_config()
    if plan.start_model is not None:
        model, note = load_for_stage(plan.start_model, config, stage)
        if note:
            say(note)
    else:
        model = EmoModel(config)
    if stage == 1:
        if recipe.init.vae is not None:  # sd15: SD's VAE instead of a stage 0
            import_vae(model, Path(recipe.init.vae))
        if recipe.init.sd15_unet is not None:
            say(import_sd15_unet(model, recipe.init.sd15_unet).summary())
        zero_init_new_branches(model)
        make_inert_temporal(model)
    if stage == 2 and recipe.init.animatediff is not None:
        say(import_animatediff(model, recipe.init.animatediff).summary())
    return model


def import_vae(model: EmoModel, source: Path) -> None:
    """A diffusers AutoencoderKL directory (or a pipeline directory's vae/) into the model's VAE."""
    from diffusers import AutoencoderKL

    if (source / "config.json").is_file():  # the VAE's own directory
        vae = AutoencoderKL.from_pretrained(source)
    elif (source / "vae" / "config.json").is_file():  # a pipeline directory
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
    else:
        raise TrainingError(f"init.vae: {source} is not a diffusers AutoencoderKL (or pipeline) directory")
    model.vae.load_state_dict(vae.state_dict())
    set_scaling_factor(model, float(vae.config.scaling_factor))
