"""Teacher-forced window probe (true motion frames + audio): one pass and DDIM from pure noise vs copying
the last motion frame. Kept as run (../../notes/default_model_v2.md).
    python teacher_forced.py STAGE_DIR [SPLIT] [THREADS]"""
import json
import sys
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from emo_rt.models import EmoModel
from emo_rt.models.conditioning import from_diffused
from emo_rt.training.data import datasets
from emo_rt.training.data.datasets import ShardIndex  # noqa
from emo_rt.training.recipe import recipe_from_dict
from emo_rt.training.stage_data import audio_cache_dir, collate, latent_cache_dir
from emo_rt.training.stages import ClipStage

torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
W = Path(sys.argv[1]); split = sys.argv[2] if len(sys.argv) > 2 else "test"
model = EmoModel.from_pretrained(W / "model").eval()
recipe = recipe_from_dict(json.loads((W / "recipe.json").read_text()))
stage = ClipStage(model, recipe, speed=True)
data = Path.home() / "emo-runs/corpus/shards"
ds = datasets.ClipWindowDataset(data, split, model.config.num_frames, model.config.num_motion_frames, stage.context,
                                0.0, seed=1, latent_cache=latent_cache_dir(data, model), audio_feature_cache=audio_cache_dir(data, model))
batch = collate([ds[i] for i in range(min(6, len(ds)))])
def psnr(a, b):
    a = ((a.clamp(-1, 1) + 1) * 127.5).round(); b = ((b.clamp(-1, 1) + 1) * 127.5).round()
    return float((10 * torch.log10(255 ** 2 / (a - b).square().mean(dim=(1, 2, 3)))).mean())
with torch.no_grad():
    z0 = stage.clean_latents(batch)  # (B,C,f,h,w)
    b, c, f, h, w = z0.shape
    dec = lambda z: model.decode_latents(z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))
    truth = dec(z0)
    cond = stage.conditions(batch, train=False)
    n = model.config.num_motion_frames
    last = batch["frame_latents"][:, n - 1:n].transpose(1, 2).expand_as(z0)
    spread = (z0 - z0.mean()).square().mean().sqrt()
    err = lambda z: float((z - z0).square().mean().sqrt() / spread)
    rough = lambda a: float((a[..., 1:] - a[..., :-1]).abs().mean())
    print("copy last motion frame: x0 err %.3f PSNR %.2f" % (err(last), psnr(dec(last), truth)))
    sch = DDIMScheduler.from_pretrained(W / "model", subfolder="scheduler", timestep_spacing="trailing")
    for steps in (1, 2, 4, 8):
        sch.set_timesteps(steps)
        z = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
        for t in sch.timesteps:
            v = model.backbone(z, t.reshape(1).expand(b), **cond)
            z = sch.step(v, t, z).prev_sample
        z = from_diffused(z, cond.get("anchor_latents"), model.config.anchor)  # frames' latents
        print(f"DDIM trailing {steps}: x0 err %.3f rough %.2f PSNR %.2f" % (err(z), rough(z) / rough(z0), psnr(dec(z), truth)), flush=True)
