"""An 8-step DDIM draw from noise with stage-1 conditions: the x0 estimate's error at each step and the
neighbour differences of drawn vs true latents.

    python lab/probes/v2_stage1/trajectory.py MODEL_DIR [STEPS]

Throwaway diagnostics of the v2 model, kept as run (../../notes/default_model_v2.md)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from diffusers import DDIMScheduler
from stage1_brow_probe import stage1_conditions

from emo_rt.eval.data import HeldOutData
from emo_rt.eval.evaluator import to_tensor
from emo_rt.models import EmoModel

torch.set_num_threads(1)
W = sys.argv[1]
model = EmoModel.from_pretrained(W).eval()
sch = DDIMScheduler.from_pretrained(W, subfolder="scheduler"); sch.set_timesteps(int(sys.argv[2]) if len(sys.argv) > 2 else 8)
data = HeldOutData(str(Path.home()) + "/emo-runs/corpus/shards", str(Path.home()) + "/emo-runs/corpus/synth")
c = data.load(list(data.entries("test"))[0])
fr = c.frames[10:50:10]
with torch.no_grad():
    z0 = model.encode_images(to_tensor(fr))[:, :, None]
    cond = stage1_conditions(model, c, len(fr))
    z = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
    for t in sch.timesteps:
        v = model.backbone(z, t.reshape(1).expand(len(fr)), **cond)
        out = sch.step(v, t, z); z = out.prev_sample
        x0 = out.pred_original_sample
        print(int(t), "x0 std per ch", x0.std(dim=(0,2,3,4)).numpy().round(2)[:8], "err rms", float((x0 - z0).square().mean().sqrt()))
    print("clean std", z0.std(dim=(0,2,3,4)).numpy().round(2)[:8])
    # spatial high-frequency energy: mean abs diff between neighbours
    hf = lambda a: float((a[..., 1:] - a[..., :-1]).abs().mean())
    print("neighbour diff clean", hf(z0), "generated", hf(z))
