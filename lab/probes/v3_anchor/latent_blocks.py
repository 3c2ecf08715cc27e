"""lab probe (not installed): does latent error turn into blocks? Run: python lab/probes/v3_anchor/latent_blocks.py
(needs ~/emo-runs/corpus7). Decode (a) clean latents of real frames, (b) + Gaussian noise, (c) the
model's latents for the same clip, (d) (c) blurred in latent space."""
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from emo_rt.eval.data import HeldOutData
from emo_rt.eval.runner import clip_reference
from emo_rt.pipeline import EmoPipeline

torch.set_num_threads(1)
pipe = EmoPipeline.from_pretrained("/work/main/emo_rt/default_model")
d = HeldOutData("/root/emo-runs/corpus7/shards", "/root/emo-runs/corpus7/synth")
e = [x for x in d.entries("test") if x.id == "c00036"][0]
clip = d.load(e)
comp = pipe.components
captured = []
orig = comp.decode_latents
comp.decode_latents = lambda lat: (captured.append(lat.clone()), orig(lat))[1]
ref = clip_reference(clip, 0)
frames = np.concatenate(list(pipe(ref, clip.audio.astype(np.float32), pipe.defaults)))
lat = torch.cat(captured)  # (N, C, h, w)
def dec(lat_): return ((orig(lat_).float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
real = torch.from_numpy(clip.frames[:len(lat)]).permute(0, 3, 1, 2).float() / 127.5 - 1
real_lat = comp.encode_images(real).float()
print("latent std: real", real_lat.std().item(), "model", lat.float().std().item())
# high-frequency energy per latent: difference from a 3x3 blur
def hf(x): return (x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).pow(2).mean().item()
print("latent HF energy: real", hf(real_lat), "model", hf(lat.float()))
pick = [12, 24, 36, 60, 84]  # frames
rows = [clip.frames[pick], frames[pick], dec(F.avg_pool2d(lat.float(), 3, 1, 1, count_include_pad=False)[pick]),
        dec((real_lat + 0.3 * torch.randn_like(real_lat))[pick])]
Image.fromarray(np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)).save("/tmp/blocks.png")
print("rows: real, model, model latents blurred 3x3, real latents + noise 0.3")
