"""lab (not installed): fine-tune only the autoencoder's decoder on the latents the Backbone draws
(lab/decoder_own/make_pairs.py: teacher-forced render windows of training clips) with the real
frames as targets, beside real latents, so the over-smooth latents the Backbone returns where the
reference does not show the answer decode to a face instead of a grid. The encoder stays frozen:
the Backbone's latents keep their meaning and only the decoder file changes.

    python lab/decoder_own/train.py MODEL_DIR PAIRS.safetensors OUT_DIR [--steps 1500]

Writes OUT_DIR/vae.safetensors (fp16, the model directory's format) and OUT_DIR/log.csv.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from emo_rt.models import EmoModel
from emo_rt.models.vae import decode_scaled, encode_scaled


def to_tensor(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = F.mse_loss(pred.detach().clamp(-1, 1), target).item()
    return 10 * np.log10(4 / mse) if mse > 0 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("pairs")
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--own", type=float, default=0.5, help="share of the batch that is the Backbone's latents")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vae = EmoModel.from_pretrained(args.model).vae.float()
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    opt = torch.optim.Adam(vae.decoder.parameters(), lr=args.lr)
    pairs = load_file(args.pairs)
    latents, frames = pairs["latents"], pairs["frames"]  # (N, C, h, w) fp16, (N, R, R, 3) uint8
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.csv", "w")
    log.write("step,loss,real_psnr,own_psnr,seconds\n")
    n_own = int(round(args.batch * args.own))
    for step in tqdm(range(1, args.steps + 1)):
        started = time.perf_counter()
        pick = torch.from_numpy(rng.integers(0, len(frames), args.batch))
        target = to_tensor(frames[pick])
        with torch.no_grad():
            real = encode_scaled(vae, target[n_own:])
        z = torch.cat([latents[pick[:n_own]].float(), real])
        pred = decode_scaled(vae, z)
        loss = F.l1_loss(pred, target) + F.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.write(f"{step},{loss.item():.5f},{psnr(pred[n_own:], target[n_own:]):.2f},"
                  f"{psnr(pred[:n_own], target[:n_own]):.2f},{time.perf_counter() - started:.3f}\n")
        log.flush()
        if step % 500 == 0 or step == args.steps:
            state = {k: v.half().contiguous() for k, v in vae.state_dict().items()}
            tmp = out / "vae.tmp"
            save_file(state, str(tmp), metadata={"format": "pt", "part": "vae"})
            tmp.rename(out / "vae.safetensors")


if __name__ == "__main__":
    main()
