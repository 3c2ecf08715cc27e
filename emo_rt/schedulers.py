"""Noise schedules and samplers: diffusers schedulers by name, on the model's training schedule.

A model directory may hold `scheduler/scheduler_config.json` (diffusers' layout, written by training:
the noise schedule and prediction type it was trained with; a `scheduler_config.json` at the top is
read too); without one, SD1.5's schedule with epsilon prediction.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "ddim": DDIMScheduler,  # the paper's sampler
    "ddpm": DDPMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}

# SD1.5's training schedule (its scheduler_config.json)
DEFAULT_NOISE_SCHEDULE = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1,
    "clip_sample": False, "set_alpha_to_one": False, "timestep_spacing": "leading",
}


def noise_schedule(model_dir: str | Path | None) -> dict:
    """The training noise schedule stored with a model (or SD1.5's)."""
    if model_dir is not None:
        for folder in (Path(model_dir) / "scheduler", Path(model_dir)):
            if (folder / "scheduler_config.json").is_file():
                return dict(DDPMScheduler.load_config(str(folder)))
    return dict(DEFAULT_NOISE_SCHEDULE)


def make_scheduler(name: str, schedule: dict) -> SchedulerMixin:
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name].from_config(schedule)
