"""Shared by the stage-4 continuation experiments (lab/brow_reader, lab/adversarial): more stage-4 steps
from the shipped student (the v3 run in ~/emo-runs/v3/run), batch 4, the whole Backbone trained with AdamW
at stage 4's learning rate, no EMA, the batches drawn from a fixed generator.

    from continued import Continuation   # with lab/stage4 on sys.path
    run = Continuation()
    for step in range(steps):
        batch = run.batch(step)
        distill, prediction = run.distill(batch)   # stage 4's loss; the clean-latent prediction kept
        ...
        run.step(loss)
    run.save(out_dir)
"""
import json
import shutil
from pathlib import Path

import torch

from emo_rt.io.shards import ShardIndex
from emo_rt.models import EmoModel
from emo_rt.models.conditioning import from_diffused
from emo_rt.training.distill import DistillStage
from emo_rt.training.recipe import recipe_from_dict
from emo_rt.training.stage_data import ShardSource, audio_cache_dir, collate, latent_cache_dir, stage_samples
from emo_rt.training.stages import loss_weight_map, weighted_mean

RUN = Path.home() / "emo-runs/v3/run"
CORPORA = ("corpus", "corpus1")  # the stage-4 data: train splits of corpus seeds 0 and 1
BATCH = 4


class Continuation:
    def __init__(self):
        self.student = EmoModel.from_pretrained(RUN / "stage4/model")
        teacher = EmoModel.from_pretrained(RUN / "stage3/model").backbone
        recipe = recipe_from_dict(json.loads((RUN / "stage4/recipe.json").read_text()))
        self.stage = DistillStage(self.student, recipe, teacher)
        shards = [Path.home() / f"emo-runs/{c}/shards" for c in CORPORA]
        sources = [ShardSource(ShardIndex(s), latent_cache_dir(s, self.student), audio_cache_dir(s, self.student))
                   for s in shards]
        self.samples, _ = stage_samples(sources, self.student, 4, recipe, self.stage.draw, self.stage.context)
        self.params = [p for n, p in self.student.named_parameters() if n.startswith("backbone.")]
        self.student.requires_grad_(False)
        for p in self.params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.params, lr=recipe.stage(4).lr, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(1234)

    def batch(self, step: int) -> dict:
        """BATCH random training samples, drawn with the keys that make each run see the same batches."""
        picks = torch.randint(0, len(self.samples), (BATCH,), generator=self.generator)
        return collate([self.samples[int(i), 10_000 + step * BATCH + j] for j, i in enumerate(picks)])

    def distill(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 4's loss (DistillStage.forward) and the student's clean-latent prediction as frame latents
        (B, C, f, h, w)."""
        stage = self.stage
        conditions = stage.conditions(batch, train=False)
        x, t = stage.start_latents(batch, batch["student_step"])
        target = stage.teacher_target(x, t, conditions)
        prediction = self.student.backbone(x, t, **conditions).float()
        out = stage.ddim_step(prediction, x, t, stage._prev(t, stage.per_step))
        loss = weighted_mean((out - target).square(), self.loss_weight(batch))
        return loss, from_diffused(prediction, stage.anchor(batch), self.student.config.anchor)

    def loss_weight(self, batch) -> torch.Tensor:
        """(B, 1, 1, h, w) stage 4's face-weighted per-pixel loss weight at latent size."""
        size = batch["frame_latents"].shape[-1]
        return loss_weight_map(batch["face_mask"], size, self.stage.loss_recipe)[:, :, None]

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()

    def save(self, out: Path, extra: dict | None = None) -> None:
        """The student as a model directory (the shipped run's other files kept), with `extra` tensors
        (name -> state dict) beside it; written beside `out`, then renamed."""
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(RUN / "stage4/model", tmp)
        self.student.save_pretrained(tmp)
        for name, state in (extra or {}).items():
            torch.save(state, tmp / name)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
