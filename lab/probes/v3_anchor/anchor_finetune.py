"""Lab: does a clean anchor latent concatenated to the Backbone input let it keep detail?
Fine-tunes the v2 stage-3 Backbone (all of it) for STEPS at B4 with anchor = none | motion | reference,
then probes teacher-forced windows of the test split.
    python anchor_ft.py VARIANT STEPS OUT"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from torch import nn

from emo_rt.models import EmoModel
from emo_rt.training.data import datasets
from emo_rt.training.recipe import recipe_from_dict
from emo_rt.training.stage_data import audio_cache_dir, collate, latent_cache_dir
from emo_rt.training.stages import ClipStage

torch.set_num_threads(1); torch.manual_seed(0)
variant, steps, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]); out.mkdir(parents=True, exist_ok=True)
W = Path.home() / "emo-runs/v2/run/stage3"
model = EmoModel.from_pretrained(W / "model")
recipe = recipe_from_dict(json.loads((W / "recipe.json").read_text()))
stage = ClipStage(model, recipe, speed=True)
n, f = model.config.num_motion_frames, model.config.num_frames

class AnchorConv(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv
        self.extra = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=False)
        nn.init.zeros_(self.extra.weight)
        self.anchor = None  # (B, C, h, w)
    def forward(self, x):  # x (B*f, C, h, w), batch-major
        a = self.anchor.repeat_interleave(x.shape[0] // self.anchor.shape[0], dim=0)
        return self.conv(x) + self.extra(a)
if variant != "none":
    model.backbone.conv_in = AnchorConv(model.backbone.conv_in)

def anchor_of(batch):
    if variant == "reference":
        return batch["reference_latents"]
    last = batch["frame_latents"][:, n - 1]
    zero = batch["zero_motion"].view(-1, 1, 1, 1)
    return torch.where(zero, batch["reference_latents"], last)
def set_anchor(batch):
    if variant != "none":
        model.backbone.conv_in.anchor = anchor_of(batch)

sets = []
for d in ("corpus/shards", "corpus1/shards"):
    root = Path.home() / "emo-runs" / d
    sets.append(datasets.ClipWindowDataset(root, "train", f, n, stage.context, 0.1, seed=0,
        latent_cache=latent_cache_dir(root, model), audio_feature_cache=audio_cache_dir(root, model)))
sizes = [len(s) for s in sets]
params = [p for p in model.backbone.parameters()]
for p in model.parameters(): p.requires_grad_(False)
for p in params: p.requires_grad_(True)
opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
g = torch.Generator().manual_seed(0); rng = np.random.default_rng(0)
model.train(); t0 = time.time(); log = []
for step in range(steps):
    samples = []
    for _ in range(4):
        k = rng.integers(0, sum(sizes)); s = 0 if k < sizes[0] else 1
        item = sets[s][int(k - (0 if s == 0 else sizes[0]))]
        item.update(stage.draw(g)); samples.append(item)
    batch = collate(samples)
    set_anchor(batch)
    loss, _ = stage(batch)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
    log.append(float(loss))
    if step % 50 == 0 or step == steps - 1:
        print(f"step {step} loss {np.mean(log[-50:]):.4f} {time.time() - t0:.0f}s", flush=True)
model.eval()
torch.save(model.backbone.state_dict(), out / "backbone.pt")

# ---- probe: teacher-forced test windows, and first windows (zero motion) ----
root = Path.home() / "emo-runs/corpus/shards"
def psnr(a, b):
    a = ((a.clamp(-1, 1) + 1) * 127.5).round(); b = ((b.clamp(-1, 1) + 1) * 127.5).round()
    return float((10 * torch.log10(255 ** 2 / (a - b).square().mean(dim=(1, 2, 3)))).mean())
sch = DDIMScheduler.from_pretrained(W / "model", subfolder="scheduler", timestep_spacing="trailing")
res = {}
for zero_p, name in ((0.0, "chained"), (1.0, "first window")):
    ds = datasets.ClipWindowDataset(root, "test", f, n, stage.context, zero_p, seed=1,
        latent_cache=latent_cache_dir(root, model), audio_feature_cache=audio_cache_dir(root, model))
    batch = collate([ds[i] for i in range(min(8, len(ds)))])
    with torch.no_grad():
        z0 = stage.clean_latents(batch); b, c, ff, h, w = z0.shape
        dec = lambda z: model.decode_latents(z.permute(0, 2, 1, 3, 4).reshape(b * ff, c, h, w))
        truth = dec(z0); cond = stage.conditions(batch, train=False); set_anchor(batch)
        a = anchor_of(batch)[:, :, None].expand_as(z0) if variant != "none" else batch["frame_latents"][:, n - 1:n].transpose(1, 2).expand_as(z0)
        spread = (z0 - z0.mean()).square().mean().sqrt()
        err = lambda z: float((z - z0).square().mean().sqrt() / spread)
        rough = lambda x: float((x[..., 1:] - x[..., :-1]).abs().mean())
        print(f"{variant} {name}: copy anchor x0 err %.3f PSNR %.2f" % (err(a), psnr(dec(a), truth)))
        for k in (1, 2, 4, 8):
            sch.set_timesteps(k)
            z = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
            for t in sch.timesteps:
                z = sch.step(model.backbone(z, t.reshape(1).expand(b), **cond), t, z).prev_sample
            r = (err(z), rough(z) / rough(z0), psnr(dec(z), truth)); res[f"{name} {k}"] = r
            print(f"{variant} {name} DDIM trailing {k}: x0 err %.3f rough %.2f PSNR %.2f" % r, flush=True)
json.dump({"variant": variant, "steps": steps, "loss_last50": float(np.mean(log[-50:])), "probe": res,
           "seconds": time.time() - t0}, open(out / "result.json", "w"), indent=1)
