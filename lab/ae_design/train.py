"""Train one candidate autoencoder (aelib.CANDIDATES) on train-split frames; resumable.

    OMP_NUM_THREADS=1 python lab/ae_design/train.py --candidate tiny32_3300_l16 --out ~/emo-runs/ae/NAME \
        --steps 2000 [--batch 8] [--crop 64] [--lr 5e-4] [--edge 0] [--perceptual 0] [--kl 1e-6] \
        [--init MODEL_DIR] [--resume]

OUT/log.csv (one line per --log-every steps), OUT/state.pt (model + optimizer + step, written to a
temporary name and renamed every --checkpoint-every steps), OUT/model/ (diffusers save_pretrained,
same cadence; at the end with scaling_factor = 1 / std of the latents of 512 training frames),
OUT/training.json. Batch draws come from (seed, step), so a resumed run sees the same samples.
Monitoring uses the corpus's *val* split only; the test split and seed 7 are left to evaluate.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import aelib  # noqa: E402

HOME = Path.home() / "emo-runs"
DEFAULT_DATA = [str(HOME / "corpus/shards"), str(HOME / "corpus1/shards")]


def atomic_save_model(vae, directory: Path) -> None:
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(str(tmp))
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@torch.no_grad()
def val_psnr(vae, frames: torch.Tensor) -> float:
    vae.eval()
    out = []
    for i in range(0, len(frames), 16):
        z, _ = aelib.encode(vae, frames[i:i + 16])
        out.append(aelib.decode(vae, z).clamp(-1, 1))
    vae.train()
    rec = torch.cat(out)
    mse = (((rec - frames) * 127.5) ** 2).flatten(1).mean(1)  # per frame, in 0..255 levels
    return float((10 * torch.log10(255.0 ** 2 / mse)).mean())


@torch.no_grad()
def latent_stats(vae, bank: aelib.FrameBank, n: int = 512) -> tuple[float, float]:
    rng = np.random.default_rng(12345)
    zs = []
    vae.eval()
    for _ in range(n // 32):
        x, _ = bank.batch(rng, 32, aelib.RESOLUTION)
        zs.append(aelib.encode(vae, x)[0])
    z = torch.cat(zs)
    return float(z.mean()), float(z.std())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidate", required=True, choices=sorted(aelib.CANDIDATES))
    p.add_argument("--out", required=True)
    p.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--edge", type=float, default=0.0, help="weight of the face-weighted L1 of image gradients")
    p.add_argument("--perceptual", type=float, default=0.0, help="weight of the evaluator-trunk feature L1")
    p.add_argument("--kl", type=float, default=1e-6, help="AutoencoderKL only: KL weight (per image pixel)")
    p.add_argument("--init", help="start from this save_pretrained directory's weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--colour-aug", action="store_true", help="permute and negate RGB channels per image")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fast only where the CPU has AVX-512 BF16)")
    p.add_argument("--latent-noise", type=float, default=0.0,
                   help="half of each batch decodes latents + s * (each channel's std) * N(0, 1), s ~ U(0, this)")
    p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only (needs --init)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    bank = aelib.FrameBank(args.data, splits=("train",))
    val_bank = aelib.FrameBank(args.data[:1], splits=("val",))
    val_frames, _ = val_bank.batch(np.random.default_rng(999), 64, aelib.RESOLUTION)
    print(f"{len(bank)} training frames of {len(bank.identities)} identities; val {len(val_bank)} frames", flush=True)

    torch.manual_seed(args.seed)
    vae = aelib.load(args.init) if args.init else aelib.build(args.candidate)
    vae.train()
    if args.freeze_encoder and not args.init:
        sys.exit("--freeze-encoder needs --init")
    trained = vae.decoder.parameters() if args.freeze_encoder else vae.parameters()
    optimizer = torch.optim.AdamW(trained, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    features = aelib.EvaluatorFeatures() if args.perceptual else None
    step, elapsed = 0, 0.0
    state_path = out / "state.pt"
    if args.resume and state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        saved = state["args"]
        for key in ("candidate", "batch", "crop", "lr", "edge", "perceptual", "kl", "seed", "warmup",
                    "latent_noise", "freeze_encoder"):
            if saved[key] != getattr(args, key):
                sys.exit(f"--resume: {key} was {saved[key]!r}, now {getattr(args, key)!r}")
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        print(f"resumed at step {step} ({elapsed / 60:.1f} min of training so far)", flush=True)
    elif state_path.exists():
        sys.exit(f"{state_path} exists: pass --resume or another --out")
    log = open(out / "log.csv", "a")
    if step == 0:
        log.write("step,loss,l1,edge,perc,kl,lr,sec_per_step,val_psnr,elapsed_min\n")
    (out / "args.json").write_text(json.dumps(vars(args), indent=1) + "\n")

    sums, count, t_last = {}, 0, time.perf_counter()
    while step < args.steps:
        t0 = time.perf_counter()
        rng = np.random.default_rng([args.seed, step])
        images, mask = bank.batch(rng, args.batch, args.crop, colour_aug=args.colour_aug)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        noise = torch.randn((args.batch, aelib.latent_channels(vae), args.crop // 8, args.crop // 8),
                            generator=torch.Generator().manual_seed(args.seed * 1_000_003 + step))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            with torch.set_grad_enabled(not args.freeze_encoder):
                z, kl = aelib.encode(vae, images, sample_noise=noise)
            if args.latent_noise:
                g = torch.Generator().manual_seed(args.seed * 1_000_003 + step + 7)
                scale = torch.rand(args.batch, generator=g) * args.latent_noise
                scale = scale * (torch.arange(args.batch) % 2)  # even rows stay clean
                spread = z.detach().float().std(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1): per channel, so
                # no channel escapes the noise by growing
                z = z + (scale[:, None, None, None] * spread * torch.randn(z.shape, generator=g)).to(z.dtype)
            rec = aelib.decode(vae, z).float()
        loss, stats = aelib.reconstruction_loss(rec, images, mask, args.edge, args.perceptual, features)
        if kl is not None:
            kl_term = kl.mean() / images[0].numel()
            loss = loss + args.kl * kl_term
            stats["kl"] = kl_term.detach()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        elapsed += time.perf_counter() - t0
        stats["loss"] = loss.detach()
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        count += 1
        checkpoint = step % args.checkpoint_every == 0 or step == args.steps
        if step % args.log_every == 0 or checkpoint:
            now = time.perf_counter()
            vp = val_psnr(vae, val_frames) if checkpoint else float("nan")
            m = {k: v / count for k, v in sums.items()}
            row = [step, m["loss"], m["l1"], m.get("edge", 0), m.get("perc", 0), m.get("kl", 0),
                   optimizer.param_groups[0]["lr"], (now - t_last) / count, vp, elapsed / 60]
            log.write(",".join(f"{x:.6g}" for x in row) + "\n")
            log.flush()
            print(f"step {step}/{args.steps} loss {m['loss']:.4f} l1 {m['l1']:.4f} "
                  f"{(now - t_last) / count:.2f} s/step" + (f" val PSNR {vp:.2f} dB" if checkpoint else ""),
                  flush=True)
            sums, count, t_last = {}, 0, time.perf_counter()
        if checkpoint:
            tmp = state_path.with_name("state.pt.tmp")
            torch.save({"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "elapsed": elapsed, "args": vars(args)}, tmp)
            os.replace(tmp, state_path)
            atomic_save_model(vae, out / "model")

    mean, std = latent_stats(vae, bank)
    vae.register_to_config(scaling_factor=1.0 / std)
    atomic_save_model(vae, out / "model")
    info = {"candidate": args.candidate, "class": type(vae).__name__, "args": vars(args), "steps": step,
            "train_minutes": elapsed / 60, "training_frames": len(bank), "training_identities": len(bank.identities),
            "latent_mean": mean, "latent_std": std, "scaling_factor": 1.0 / std,
            "val_psnr_64_frames": val_psnr(vae, val_frames)}
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
