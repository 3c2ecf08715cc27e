"""Can stage 1 model its autoencoder's latents? Each model (stage 1 or later) draws test frames from pure
noise with stage-1 conditions only (the clip's frame 0 as the reference, its face mask; DDIM, no
guidance), and we compare what it drew with the frames' own latents:

- x0 error: RMS of (final latents - true latents) over the true latents' RMS spread (1.0 = as far
  off as a random frame of the same spread);
- roughness: mean |difference| of horizontally neighbouring latents, drawn over true (> 1: the model
  adds high-frequency detail that is not there, which a sub-pixel decoder turns into coloured noise);
- PSNR of the decoded frames, and of the autoencoder's round trip (its ceiling);
- a contact sheet per model: the true frames over the drawn ones.

    python lab/probes/diffusability.py --weights RUN_A/stage1/model RUN_B/stage1/model --out sheet_prefix \
        [--data corpus/shards --corpus corpus/synth] [--clips 3] [--steps 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler

sys.path.insert(0, str(Path(__file__).parent))
from stage1_brow_probe import stage1_conditions  # noqa: E402

from emo_rt.eval.data import HeldOutData  # noqa: E402
from emo_rt.eval.evaluator import to_tensor  # noqa: E402
from emo_rt.eval.metrics import psnr  # noqa: E402
from emo_rt.io.preview import contact_sheet  # noqa: E402
from emo_rt.models import EmoModel  # noqa: E402
from emo_rt.models.conditioning import from_diffused  # noqa: E402


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def probe(weights: str, clips, steps: int, seed: int, spacing: str) -> tuple[dict, np.ndarray, np.ndarray]:
    model = EmoModel.from_pretrained(weights).eval()
    scheduler = DDIMScheduler.from_pretrained(weights, subfolder="scheduler", timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    truth, drawn, latents, generated = [], [], [], []
    for clip in clips:
        frames = clip.frames[10:50:10]  # (4, R, R, 3) uint8
        z0 = model.encode_images(to_tensor(frames))[:, :, None]  # (4, C, 1, h, w)
        conditions = stage1_conditions(model, clip, len(frames))
        z = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
        for t in scheduler.timesteps:
            z = scheduler.step(model.backbone(z, t.reshape(1).expand(len(frames)), **conditions), t, z).prev_sample
        z = from_diffused(z, conditions.get("anchor_latents"), model.config.anchor)  # the frames' latents
        truth.append(frames)
        drawn.append(to_uint8(model.decode_latents(z[:, :, 0])))
        latents.append(z0)
        generated.append(z)
    z0, z = torch.cat(latents), torch.cat(generated)
    truth, drawn = np.concatenate(truth), np.concatenate(drawn)
    rough = lambda a: float((a[..., 1:] - a[..., :-1]).abs().mean())  # noqa: E731
    round_trip = to_uint8(model.decode_latents(z0[:, :, 0]))
    figures = {"latent channels": z0.shape[1],
               "x0 error": float((z - z0).square().mean().sqrt() / (z0 - z0.mean()).square().mean().sqrt()),
               "roughness drawn/true": rough(z) / rough(z0),
               "PSNR drawn": float(psnr(drawn, truth).mean()),
               "PSNR round trip": float(psnr(round_trip, truth).mean())}
    return figures, truth, drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", required=True)
    parser.add_argument("--out", required=True, help="contact sheets go to OUT_<k>.png")
    parser.add_argument("--data", default=str(Path.home() / "emo-runs/corpus/shards"))
    parser.add_argument("--corpus", default=str(Path.home() / "emo-runs/corpus/synth"))
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", default="leading", choices=["leading", "trailing"],
                        help="DDIM timesteps: 'leading' starts below 1000 - 1000/steps, 'trailing' at 999")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = HeldOutData(args.data, args.corpus)
    clips = [data.load(e) for e in list(data.entries("test"))[:args.clips]]
    print("| model | latent ch | x0 error | roughness drawn/true | PSNR drawn | PSNR round trip |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, weights in enumerate(args.weights):
        f, truth, drawn = probe(weights, clips, args.steps, args.seed, args.spacing)
        print(f"| {weights} | {f['latent channels']} | {f['x0 error']:.3f} | {f['roughness drawn/true']:.2f} | "
              f"{f['PSNR drawn']:.2f} | {f['PSNR round trip']:.2f} |", flush=True)
        contact_sheet(np.concatenate([truth[:6], drawn[:6]]), f"{args.out}_{k}.png",
                      label=f"{weights}: true (top), drawn")


if __name__ == "__main__":
    main()
