"""What a stage's optimisation carries from step to step: AdamW, the warm-up + cosine learning rate,
the EMA of the trained weights and the RNG states; all of it goes into a checkpoint and comes back."""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from emo_rt.training.recipe import StageRecipe


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warm-up over `warmup` steps, then constant or cosine down to 10% at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


class Optimisation:
    """AdamW over `params` (named `names`) with the recipe's schedule, clipping and EMA."""

    def __init__(self, names: list[str], params: list[torch.nn.Parameter], recipe: StageRecipe):
        self.names, self.params, self.recipe = names, params, recipe
        self.optimizer = torch.optim.AdamW(params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, recipe.warmup_steps, recipe.steps, recipe.lr_schedule))
        self.ema = {n: q.detach().clone().float() for n, q in zip(names, params)} if recipe.ema_decay else {}

    def step(self, step: int) -> tuple[float, float]:
        """Clip, step the optimiser and the schedule, update the EMA; returns (grad norm, lr used)."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.recipe.grad_clip or float("inf"))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        if self.ema:  # decay warms up as in diffusers' EMAModel, so the init fades out fast
            decay = min(self.recipe.ema_decay, (step + 2) / (step + 11))
            with torch.no_grad():
                for n, q in zip(self.names, self.params):
                    self.ema[n].lerp_(q.detach().float(), 1 - decay)
        return float(grad_norm), lr

    @torch.no_grad()
    def copy_ema_into(self, model: torch.nn.Module) -> None:
        """Replace the trained parameters by their EMA (what a stage's output holds)."""
        parameters = dict(model.named_parameters())
        for n in self.names:
            parameters[n].copy_(self.ema[n])

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.scheduler.state_dict(),
                "ema": {k: v.cpu() for k, v in self.ema.items()}, "rng": rng_state()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        self.ema = {k: v.to(device) for k, v in state["ema"].items()}
        set_rng_state(state["rng"])


def rng_state() -> dict:
    """torch, python and numpy RNG states as tensors and plain values (loadable with weights_only)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
