"""lab (not installed): fine-tune only the autoencoder's decoder so that mixed latents decode to mixed
images. The Backbone's clean-latent prediction returns a mean of latents where the reference does not
show the answer; this decoder draws such means as a grid (lab/notes/default_model_v2.md). Training on
z = a z1 + (1 - a) z2 (two frames of one clip, encoder frozen) with target a x1 + (1 - a) x2, beside
clean latents, asks it to decode a mean of latents to the mean image.

    python lab/decoder_mix/train.py MODEL_DIR OUT_DIR [--steps 600] [--clips 200]

Writes OUT_DIR/vae.safetensors (fp16, the model directory's format) and OUT_DIR/log.csv.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from emo_rt.eval.data import HeldOutData
from emo_rt.models import EmoModel
from emo_rt.models.vae import decode_scaled, encode_scaled

HOME = Path.home() / "emo-runs"


def frames_of(clips: int, seed: int) -> list[np.ndarray]:
    """uint8 (125, R, R, 3) per train clip of corpus1 and corpus."""
    out = []
    for name in ("corpus1", "corpus"):
        data = HeldOutData(HOME / name / "shards", HOME / name / "synth")
        entries = data.entries("train")
        pick = np.random.default_rng(seed).permutation(len(entries))[:clips]
        out += [data.load(entries[i]).frames for i in pick]
    return out


def to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--mix", type=float, default=0.6, help="share of the batch that is mixed")
    args = p.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vae = EmoModel.from_pretrained(args.model).vae.float()
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    opt = torch.optim.Adam(vae.decoder.parameters(), lr=args.lr)
    clips = frames_of(args.clips, 0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.csv", "w")
    log.write("step,loss,clean_psnr,seconds\n")
    for step in tqdm(range(1, args.steps + 1)):
        started = time.perf_counter()
        b = args.batch
        c = rng.integers(0, len(clips), b)
        i = rng.integers(0, 125, b)
        j = np.clip(i + rng.integers(-12, 13, b), 0, 124)  # a nearby frame: another mouth state
        x1 = to_tensor(np.stack([clips[k][t] for k, t in zip(c, i)]))
        x2 = to_tensor(np.stack([clips[k][t] for k, t in zip(c, j)]))
        with torch.no_grad():
            z1, z2 = encode_scaled(vae, x1), encode_scaled(vae, x2)
        a = torch.rand(b, 1, 1, 1)
        a[: int(round(b * (1 - args.mix)))] = 1.0  # the rest: clean latents
        z, target = a * z1 + (1 - a) * z2, a * x1 + (1 - a) * x2
        pred = decode_scaled(vae, z)
        loss = F.l1_loss(pred, target) + F.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        clean = a.flatten() == 1
        mse = F.mse_loss(pred[clean].detach().clamp(-1, 1), target[clean]).item() if clean.any() else float("nan")
        psnr = 10 * np.log10(4 / mse) if mse == mse and mse > 0 else float("nan")
        log.write(f"{step},{loss.item():.5f},{psnr:.2f},{time.perf_counter() - started:.3f}\n")
        log.flush()
    state = {k: v.half().contiguous() for k, v in vae.state_dict().items()}
    save_file(state, str(out / "vae.safetensors"), metadata={"format": "pt", "part": "vae"})


if __name__ == "__main__":
    main()
