"""Can a stage-1 model draw the brows it is shown? Each test frame is noised to timestep t (the
training noise schedule) and denoised back with stage-1 conditions only (the clip's frame 0 as the
reference, its face mask, no audio, no motion frames); the evaluator then reads mouth opening and
brow raise from the result. The noisy latents still hold some of the true brow state, so a backbone
that draws the upper face sharply keeps more of it: compare models (e.g. stage 1 before and after
training it longer) at the same t and seed. t = 0 is the VAE round trip alone.

    python benchmarks/stage1_brow_probe.py --weights runs/tiny/stage1/model runs/s1long/stage1/model \
        [--clips 6] [--timesteps 0 300 500 700] [--steps 10] [--every 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from diffusers import DDIMScheduler

from emo_rt.eval import metrics
from emo_rt.eval.data import EvalClip, HeldOutData
from emo_rt.eval.evaluator import Evaluator, to_tensor
from emo_rt.models import EmoModel
from emo_rt.schedulers import noise_schedule
from emo_rt.training.recipe import DenoiseStageRecipe, Recipe
from emo_rt.training.stages import FrameStage


@torch.no_grad()
def stage1_conditions(model: EmoModel, clip: EvalClip, batch: int) -> dict:
    """What stage 1 (FrameStage) gives the Backbone for `batch` target frames of `clip`, with its
    frame 0 as the reference and no dropout."""
    recipe = Recipe(model="tiny", stage1=DenoiseStageRecipe(steps=1, batch_size=1, lr=1.0))  # only for its shapes
    reference = model.encode_images(to_tensor(clip.frames[:1]))  # (1, 4, h, w)
    mask = torch.from_numpy(clip.face_mask[None, None].astype(np.float32))  # (1, 1, R, R)
    inputs = {"reference_latents": reference.expand(batch, -1, -1, -1), "face_mask": mask.expand(batch, -1, -1, -1)}
    return FrameStage(model, recipe).conditions(inputs, train=False)


@torch.no_grad()
def redraw(model: EmoModel, schedule: dict, clip: EvalClip, frames: np.ndarray, t_start: int, steps: int,
           seed: int) -> np.ndarray:
    """uint8 (N, R, R, 3) -> the frames noised to `t_start` and denoised by the model (DDIM), uint8."""
    latents = model.encode_images(to_tensor(frames))[:, :, None]  # (N, 4, 1, h, w)
    if t_start > 0:
        scheduler = DDIMScheduler.from_config(schedule)
        scheduler.set_timesteps(steps)
        timesteps = [t for t in scheduler.timesteps if int(t) <= t_start]
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
        z = scheduler.add_noise(latents, noise, timesteps[0].reshape(1))
        conditions = stage1_conditions(model, clip, len(frames))
        for t in timesteps:
            v = model.backbone(z, t.reshape(1).expand(len(frames)), **conditions)
            z = scheduler.step(v, t, z).prev_sample
        latents = z
    images = model.decode_latents(latents[:, :, 0]).clamp(-1, 1)
    return ((images + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", required=True, help="model directories (stage 1 or later)")
    parser.add_argument("--data", default="corpus/shards")
    parser.add_argument("--corpus", default="corpus/synth")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--every", type=int, default=2, help="probe every k-th frame of each clip")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[0, 300, 500, 700])
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps over the whole schedule")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, evaluator = HeldOutData(args.data, args.corpus), Evaluator.from_pretrained()
    clips = [data.load(e) for e in list(data.entries("test"))[:args.clips]]
    truth = {k: np.concatenate([c.truth[k][::args.every] for c in clips]) for k in ("mouth_open", "brow_raise")}
    real = {k: np.concatenate([evaluator.measure(c.frames[::args.every])[k] for c in clips]) for k in truth}
    print(f"{len(clips)} test clips, {truth['brow_raise'].size} frames; evaluator on the real frames: "
          f"brow r {metrics.pearson(real['brow_raise'], truth['brow_raise']):.3f}, "
          f"mouth r {metrics.pearson(real['mouth_open'], truth['mouth_open']):.3f}")
    print("| model | t | brow r | mouth r | seconds |\n| --- | --- | --- | --- | --- |")
    for weights in args.weights:
        model, schedule = EmoModel.from_pretrained(weights).eval(), noise_schedule(weights)
        for t_start in args.timesteps:
            started = time.perf_counter()
            measured = {k: [] for k in truth}
            for clip in clips:
                frames = redraw(model, schedule, clip, clip.frames[::args.every], t_start, args.steps, args.seed)
                values = evaluator.measure(frames)
                for k in truth:
                    measured[k].append(values[k])
            r = {k: metrics.pearson(np.concatenate(v), truth[k]) for k, v in measured.items()}
            print(f"| {weights} | {t_start} | {r['brow_raise']:.3f} | {r['mouth_open']:.3f} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
