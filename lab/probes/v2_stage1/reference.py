"""x0 from one pass at t = 999 / 700 / 400 with the clip's own reference vs another clip's, and a sheet.

    python lab/probes/v2_stage1/reference.py MODEL_DIR SHEET.png

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
from emo_rt.eval.metrics import psnr
from emo_rt.models import EmoModel

torch.set_num_threads(1)
W = sys.argv[1]
model = EmoModel.from_pretrained(W).eval()
sch = DDPMScheduler.from_pretrained(W, subfolder="scheduler")
data = HeldOutData(str(Path.home()) + "/emo-runs/corpus/shards", str(Path.home()) + "/emo-runs/corpus/synth")
e = list(data.entries("test")); c, other = data.load(e[0]), data.load(e[3])
fr = c.frames[10:50:10]
dec = lambda z: ((model.decode_latents(z).clamp(-1,1)+1)*127.5).round().byte().permute(0,2,3,1).numpy()
with torch.no_grad():
    z0 = model.encode_images(to_tensor(fr))[:, :, None]
    for name, cl in (("own ref", c), ("other clip's ref", other)):
        cond = stage1_conditions(model, cl, len(fr))
        for t in (999, 700, 400):
            tt = torch.tensor([t]); noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
            zt = sch.add_noise(z0, noise, tt)
            v = model.backbone(zt, tt.expand(len(fr)), **cond)
            a = sch.alphas_cumprod[t].sqrt(); s = (1 - sch.alphas_cumprod[t]).sqrt()
            x0 = a * zt - s * v
            print(name, t, "x0 PSNR", round(float(psnr(dec(x0[:, :, 0]), fr).mean()), 2))
    print("ref as answer", round(float(psnr(np.repeat(c.frames[:1], 4, 0), fr).mean()), 2))
from emo_rt.io.preview import contact_sheet

with torch.no_grad():
    cond = stage1_conditions(model, c, len(fr))
    rows = [fr]
    for t in (999, 700, 400):
        tt = torch.tensor([t]); noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
        zt = sch.add_noise(z0, noise, tt)
        v = model.backbone(zt, tt.expand(len(fr)), **cond)
        a = sch.alphas_cumprod[t].sqrt(); s = (1 - sch.alphas_cumprod[t]).sqrt()
        rows.append(dec((a * zt - s * v)[:, :, 0]))
    contact_sheet(np.concatenate(rows), sys.argv[2], columns=4, label="true; x0 predicted at t=999, 700, 400")
