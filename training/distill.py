"""Stage 4: a student that renders in few single-pass steps, distilled from the guided teacher.

The teacher (a frozen copy of the stage-3 model) samples with classifier-free guidance (`guidance`,
the conditional + unconditional pair per step) and `teacher_steps` DDIM steps; the student (the
Backbone, initialised from the teacher) learns to make each `M = teacher_steps / student_steps`
guided teacher steps in one unguided pass: guidance and step distillation in one (Meng et al. 2023,
"On Distillation of Guided Diffusion Models"; Salimans & Ho 2022, progressive distillation).

Both grids use diffusers' "trailing" timestep spacing (t = 999, 874, ... for 8 steps), which nests:
the student's grid for S steps is every M-th teacher timestep, from 999 down, the last step going to
the clean latents. A sample draws the student step k: its input x_{t_k} is what a render feeds that
step (k = 0: the reference's latents noised to t_0, the render's default start; k > 0: the clip's
own latents noised to t_k), the target is the teacher's latents after its M guided steps from there,
and the loss is the face-weighted squared error of the student's one DDIM step to that target.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from emo_rt.models import EmoModel
from emo_rt.models.conditioning import from_diffused, null_audio_tokens, null_reference_features, to_diffused
from emo_rt.pipeline import RenderSettings
from emo_rt.training.recipe import Recipe
from emo_rt.training.stages import ClipStage, loss_weight_map, weighted_mean


def trailing_timesteps(steps: int, train_steps: int) -> torch.Tensor:
    """diffusers' "trailing" spacing: (steps,) from train_steps - 1 down, every train_steps / steps."""
    return (torch.arange(train_steps, 0, -train_steps / steps).round() - 1).long()


class DistillStage(ClipStage):
    number = 4

    def __init__(self, model: EmoModel, recipe: Recipe, teacher: torch.nn.Module):
        super().__init__(model, recipe, speed=True)
        self.number = 4
        r = recipe.stage(4)
        self.student_steps, self.teacher_steps, self.guidance = r.student_steps, r.teacher_steps, r.guidance
        self.per_step = r.teacher_steps // r.student_steps
        train_steps = self.scheduler.config.num_train_timesteps
        self.teacher_grid = trailing_timesteps(r.teacher_steps, train_steps)
        self.student_grid = self.teacher_grid[::self.per_step]
        # the student renders with trailing spacing: saved with its noise schedule
        self.scheduler = DDPMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing")
        self.teacher = teacher.eval().requires_grad_(False)  # the stage-3 Backbone (not the resumed student)
        self.alphas = self.scheduler.alphas_cumprod  # (T,)

    def render_settings(self) -> RenderSettings:
        """What the student renders with (its model directory's render.json)."""
        return RenderSettings(scheduler="ddim", steps=self.student_steps, cfg=1.0, start="reference")

    def draw(self, generator):
        drawn = super().draw(generator)
        drawn["student_step"] = torch.randint(0, self.student_steps, (), generator=generator)
        return drawn

    def _alpha(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar at timesteps t (B,), 1 where t < 0 (the clean end), shaped to broadcast on like."""
        a = torch.where(t >= 0, self.alphas.to(like.device)[t.clamp(min=0)], torch.ones_like(t, dtype=like.dtype))
        return a.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def ddim_step(self, prediction: torch.Tensor, x: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor):
        """Deterministic DDIM (eta 0, no clipping) from t to t_prev per sample, from the model's
        prediction (epsilon or v), exactly as the render's DDIMScheduler does it."""
        a, a_prev = self._alpha(t, x), self._alpha(t_prev, x)
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            eps = prediction
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        elif kind == "sample":
            x0 = prediction
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        else:
            x0 = a.sqrt() * x - (1 - a).sqrt() * prediction
            eps = a.sqrt() * prediction + (1 - a).sqrt() * x
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps

    def _prev(self, t: torch.Tensor, stride: int) -> torch.Tensor:
        return t - stride * (self.scheduler.config.num_train_timesteps // self.teacher_steps)

    def start_latents(self, batch, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_{t_k} (B, C, f, h, w) and t_k (B,): the render's noised-reference start for k = 0, the
        clip's latents noised to t_k otherwise."""
        latents, noise = self.clean_latents(batch), batch["noise"]
        t = self.student_grid.to(latents.device)[k]
        reference = batch["reference_latents"][:, :, None].expand_as(latents)
        first = (k == 0).reshape(-1, 1, 1, 1, 1)
        clean = to_diffused(torch.where(first, reference, latents), self.anchor(batch), self.model.config.anchor)
        return self.scheduler.add_noise(clean, noise, t), t

    @torch.no_grad()
    def teacher_target(self, x: torch.Tensor, t: torch.Tensor, conditions: dict) -> torch.Tensor:
        """The teacher's latents after `per_step` guided DDIM steps from (x, t)."""
        null = dict(conditions, reference_features=null_reference_features(conditions["reference_features"]),
                    audio_tokens=null_audio_tokens(conditions["audio_tokens"]))
        pair = {key: ([torch.cat([a, b]) for a, b in zip(value, null[key])] if isinstance(value, list)
                      else torch.cat([value, null[key]]))
                for key, value in conditions.items()}
        for _ in range(self.per_step):
            prediction = self.teacher(torch.cat([x, x]), torch.cat([t, t]), **pair).float()
            cond, uncond = prediction.chunk(2)
            t_prev = self._prev(t, 1)
            x = self.ddim_step(uncond + self.guidance * (cond - uncond), x, t, t_prev)
            t = t_prev
        return x

    def forward(self, batch):
        k = batch["student_step"]
        conditions = self.conditions(batch, train=False)
        x, t = self.start_latents(batch, k)
        target = self.teacher_target(x, t, conditions)
        with self.autocast(x.device):
            prediction = self.model.backbone(x, t, **conditions)
        student = self.ddim_step(prediction.float(), x, t, self._prev(t, self.per_step))
        weight = loss_weight_map(batch["face_mask"], x.shape[-1], self.loss_recipe)[:, :, None]
        return weighted_mean((student - target).square(), weight), {}

    @torch.no_grad()
    def sample(self, batch):
        """Per sample three rows: [reference, true frames], [reference, teacher frames], [reference,
        student frames], both from the same noised-reference start."""
        conditions = self.conditions(batch, train=False)
        b = batch["noise"].shape[0]
        x_t, t = self.start_latents(batch, torch.zeros(b, dtype=torch.long, device=batch["noise"].device))
        teacher, student = x_t, x_t
        for _ in range(self.student_steps):
            teacher = self.teacher_target(teacher, t, conditions)
            prediction = self.model.backbone(student, t, **conditions).float()
            t_prev = self._prev(t, self.per_step)
            student = self.ddim_step(prediction, student, t, t_prev)
            t = t_prev
        truth = self.clean_latents(batch)
        anchor, mode = self.anchor(batch), self.model.config.anchor
        teacher, student = from_diffused(teacher, anchor, mode), from_diffused(student, anchor, mode)
        c, f, h, w = truth.shape[1:]
        decode = lambda z: self.model.decode_latents(z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)).reshape(
            b, f, 3, *self._image_size())  # noqa: E731
        reference = self.model.decode_latents(batch["reference_latents"])[:, None]
        rows = [torch.cat([reference, decode(z)], dim=1) for z in (truth, teacher, student)]
        return torch.stack(rows, dim=1).flatten(0, 1)  # (3B, 1+f, 3, H, W)
