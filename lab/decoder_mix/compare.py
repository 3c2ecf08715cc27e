"""lab (not installed): the shipped decoder vs a fine-tuned one (lab/decoder_mix/train.py) on
(1) the round trip of held-out frames (corpus test split and seed 7), PSNR, and (2) the latents the
shipped model draws for seed-7 test clip c00036 (captured through the eval's call), as a sheet.

    python lab/decoder_mix/compare.py MODEL_DIR VAE.safetensors OUT.png
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from emo_rt.eval.data import HeldOutData
from emo_rt.eval.runner import clip_reference
from emo_rt.models.vae import decode_scaled, encode_scaled
from emo_rt.pipeline import EmoPipeline

HOME = Path.home() / "emo-runs"
torch.set_num_threads(1)


def to_tensor(x):
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(x):
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def main(model_dir: str, vae_path: str, out: str) -> None:
    pipe = EmoPipeline.from_pretrained(model_dir)
    old = pipe.components.model.vae.float()
    new = copy.deepcopy(old)
    new.load_state_dict({k: v.float() for k, v in load_file(vae_path).items()})
    # 1. round trip of held-out frames
    for name in ("corpus", "corpus7"):
        data = HeldOutData(HOME / name / "shards", HOME / name / "synth")
        frames = np.concatenate([data.load(e).frames[::10] for e in data.entries("test")[:6]])
        x = to_tensor(frames)
        with torch.no_grad():
            z = encode_scaled(old, x)
            for label, vae in (("shipped", old), ("fine-tuned", new)):
                y = decode_scaled(vae, z).clamp(-1, 1)
                psnr = 10 * torch.log10(4 / ((y - x) ** 2).mean((1, 2, 3))).mean().item()
                print(f"{name} test round trip, {label} decoder: {psnr:.2f} dB over {len(x)} frames")
    # 2. the model's latents for c00036
    data = HeldOutData(HOME / "corpus7" / "shards", HOME / "corpus7" / "synth")
    clip = data.load([e for e in data.entries("test") if e.id == "c00036"][0])
    captured = []
    decode = pipe.components.decode_latents
    pipe.components.decode_latents = lambda lat: (captured.append(lat.float().clone()), decode(lat))[1]
    frames = np.concatenate(list(pipe(clip_reference(clip, 0), clip.audio.astype(np.float32), pipe.defaults)))
    lat = torch.cat(captured)
    pick = [12, 24, 36, 48, 60, 72, 84]
    with torch.no_grad():
        fixed = to_uint8(decode_scaled(new, lat[pick]))
    rows = [clip.frames[pick], frames[pick], fixed]
    Image.fromarray(np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)).save(out)
    print(f"wrote {out}: rows real, shipped decoder, fine-tuned decoder")


if __name__ == "__main__":
    main(*sys.argv[1:4])
