"""One Backbone pass at t = 10..700 with stage-1 conditions: x0 PSNR, v-prediction error, latent error.

    python lab/probes/v2_stage1/noise_levels.py MODEL_DIR

Throwaway diagnostics of the v2 model, kept as run (../../notes/default_model_v2.md)."""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from diffusers import DDPMScheduler
from stage1_brow_probe import stage1_conditions

from emo_rt.eval.data import HeldOutData
from emo_rt.eval.evaluator import to_tensor
from emo_rt.models import EmoModel

torch.set_num_threads(1)
W = sys.argv[1]
model = EmoModel.from_pretrained(W).eval()
sch = DDPMScheduler.from_pretrained(W, subfolder="scheduler")
data = HeldOutData(str(Path.home()) + "/emo-runs/corpus/shards", str(Path.home()) + "/emo-runs/corpus/synth")
c = data.load(list(data.entries("test"))[0])
fr = c.frames[10:50:10]
def psnr(a, b): return float(10*np.log10(255**2/np.mean((a.astype(float)-b.astype(float))**2)))
def dec(z): return ((model.decode_latents(z).clamp(-1,1)+1)*127.5).round().byte().permute(0,2,3,1).numpy()
with torch.no_grad():
    z0 = model.encode_images(to_tensor(fr))[:, :, None]
    cond = stage1_conditions(model, c, len(fr))
    for t in (10, 50, 100, 200, 400, 700):
        tt = torch.tensor([t])
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
        zt = sch.add_noise(z0, noise, tt)
        v = model.backbone(zt, tt.expand(len(fr)), **cond)
        a = sch.alphas_cumprod[t].sqrt(); s = (1 - sch.alphas_cumprod[t]).sqrt()
        x0 = a * zt - s * v
        vt = sch.get_velocity(z0, noise, tt)
        print(t, "x0 psnr", round(psnr(dec(x0[:, :, 0]), fr), 2), "noisy-as-is", round(psnr(dec((zt/a)[:, :, 0]), fr), 2),
              "v mse", round(float((v - vt).square().mean()), 4), "latent mse", round(float((x0 - z0).square().mean()), 4), flush=True)
