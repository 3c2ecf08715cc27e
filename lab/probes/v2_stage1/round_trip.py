"""Round trip of a model's autoencoder on 12 test frames, and with N(0, s) added to the scaled latents.

    python lab/probes/v2_stage1/round_trip.py MODEL_DIR

Throwaway diagnostics of the v2 model, kept as run (../../notes/default_model_v2.md)."""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from emo_rt.eval.data import HeldOutData
from emo_rt.eval.evaluator import to_tensor
from emo_rt.models import EmoModel

torch.set_num_threads(1)
W = sys.argv[1]
model = EmoModel.from_pretrained(W).eval()
data = HeldOutData(str(Path.home()) + "/emo-runs/corpus/shards", str(Path.home()) + "/emo-runs/corpus/synth")
clips = [data.load(e) for e in list(data.entries("test"))[:3]]
frames = np.concatenate([c.frames[::10] for c in clips])
x = to_tensor(frames)
with torch.no_grad():
    z = model.encode_images(x)
    print("scaled latent per-channel std", z.std(dim=(0,2,3)).numpy().round(3), "mean", z.mean(dim=(0,2,3)).numpy().round(2))
    def psnr(a, b): return float(10*np.log10(255**2/np.mean((a.astype(float)-b.astype(float))**2)))
    def dec(z): return ((model.decode_latents(z).clamp(-1,1)+1)*127.5).round().byte().permute(0,2,3,1).numpy()
    print("round trip", psnr(dec(z), frames))
    for s in (0.05, 0.1, 0.2):
        print("decode(z+%.2f N)" % s, psnr(dec(z + s*torch.randn_like(z)), frames))
sched = model.scheduler.config if hasattr(model, "scheduler") else None
import json
from pathlib import Path

schedule = json.loads((Path(W)/"scheduler"/"scheduler_config.json").read_text()) if (Path(W)/"scheduler").exists() else None
print("schedule", schedule)
