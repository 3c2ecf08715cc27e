"""Stage 4 continued from the shipped student with a brow term: distillation as stage 4 trains it, plus
`weight` x the squared difference of the latent brow reader (reader.py) between the student's clean-latent
prediction and the clip's true latents, per frame. weight 0 is the control (the same extra steps, distillation
alone). With env TRUE_WEIGHT: also that weight x the face-weighted squared error of the clean-latent
prediction to the clip's latents (the control for any pull towards the true frames).

    python lab/brow_reader/finetune.py READER.pt WEIGHT STEPS OUT_MODEL_DIR
"""
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from emo_rt.io.shards import ShardIndex
from emo_rt.models import EmoModel
from emo_rt.models.conditioning import from_diffused
from emo_rt.training.distill import DistillStage
from emo_rt.training.recipe import recipe_from_dict
from emo_rt.training.stage_data import (
    ShardSource,
    audio_cache_dir,
    collate,
    latent_cache_dir,
    stage_samples,
)
from emo_rt.training.stages import loss_weight_map, weighted_mean

sys.path.insert(0, str(Path(__file__).parent))
from reader import BrowReader  # noqa: E402

torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2")))
READER, WEIGHT, STEPS, OUT = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
TRUE_WEIGHT = float(__import__("os").environ.get("TRUE_WEIGHT", "0"))
run = Path.home() / "emo-runs/v3/run"
student = EmoModel.from_pretrained(run / "stage4/model")
teacher = EmoModel.from_pretrained(run / "stage3/model").backbone
recipe = recipe_from_dict(json.loads((run / "stage4/recipe.json").read_text()))
stage = DistillStage(student, recipe, teacher)
saved = torch.load(READER, weights_only=True)
reader = BrowReader()
reader.load_state_dict(saved["state"])
reader.requires_grad_(False).eval()
sources = [ShardSource(ShardIndex(Path.home() / f"emo-runs/{c}/shards"),
                       latent_cache_dir(Path.home() / f"emo-runs/{c}/shards", student),
                       audio_cache_dir(Path.home() / f"emo-runs/{c}/shards", student)) for c in ("corpus", "corpus1")]
samples, _ = stage_samples(sources, student, 4, recipe, stage.draw, stage.context)
params = [p for n, p in student.named_parameters() if n.startswith("backbone.")]
student.requires_grad_(False)
for p in params:
    p.requires_grad_(True)
opt = torch.optim.AdamW(params, lr=recipe.stage(4).lr, weight_decay=0.0)


def brows(latents):  # (B, C, f, h, w) -> (B, f)
    b, c, f, h, w = latents.shape
    return reader(latents.transpose(1, 2).reshape(b * f, c, h, w)).reshape(b, f)


g = torch.Generator().manual_seed(1234)
t0 = time.time()
for step in range(STEPS):
    keys = [(int(i), 10_000 + step * 4 + j) for j, i in enumerate(torch.randint(0, len(samples), (4,), generator=g))]
    batch = collate([samples[k] for k in keys])
    # stage 4's loss (DistillStage.forward), with the student's clean-latent prediction kept
    k = batch["student_step"]
    conditions = stage.conditions(batch, train=False)
    x, t = stage.start_latents(batch, k)
    target = stage.teacher_target(x, t, conditions)
    prediction = student.backbone(x, t, **conditions).float()
    out = stage.ddim_step(prediction, x, t, stage._prev(t, stage.per_step))
    weight = loss_weight_map(batch["face_mask"], x.shape[-1], stage.loss_recipe)[:, :, None]
    distill = weighted_mean((out - target).square(), weight)
    drawn = from_diffused(prediction, stage.anchor(batch), student.config.anchor)
    brow = (brows(drawn) - brows(stage.clean_latents(batch))).square().mean()
    # the control for "any pull towards the true frames": face-weighted squared error of the student's
    # clean-latent prediction to the clip's latents (env TRUE_WEIGHT, default 0)
    true = weighted_mean((drawn - stage.clean_latents(batch)).square(), weight)
    loss = distill + WEIGHT * brow + TRUE_WEIGHT * true
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    if (step + 1) % 10 == 0:
        print(f"step {step + 1} distill {distill.item():.5f} brow {brow.item():.4f} true {true.item():.4f} {(time.time() - t0) / (step + 1):.2f} s/step", flush=True)
tmp = OUT.with_name(OUT.name + ".partial")
shutil.rmtree(tmp, ignore_errors=True)
shutil.copytree(run / "stage4/model", tmp)
student.save_pretrained(tmp)
shutil.rmtree(OUT, ignore_errors=True)
tmp.rename(OUT)
print("saved", OUT)
