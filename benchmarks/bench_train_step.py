"""Training-step throughput per stage at tiny scale, plus the one-off cache costs.

One step = the stage's forward (Stage.forward, as the trainer runs it), backward, AdamW step, on a
batch shaped like the datasets' (caches already made: stages 1-3 read latents and audio features).
Prints a Markdown table: median step time and samples/s per stage, threads and precision.

    python benchmarks/bench_train_step.py                       # tiny preset, batch sizes of tiny.yaml
    python benchmarks/bench_train_step.py --threads 1 2 --precision fp32 bf16 --steps 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from emo_rt.models import EmoModel
from emo_rt.models.weights import zero_init_new_branches
from emo_rt.training.recipe import load_recipe, recipe_from_dict
from emo_rt.training.stage_data import collate
from emo_rt.training.stages import build_stage, make_inert_temporal

RECIPE = Path(__file__).resolve().parents[1] / "training" / "recipes" / "tiny.yaml"


def fake_batch(stage, model: EmoModel, batch_size: int) -> dict[str, torch.Tensor]:
    """A batch with the datasets' keys and shapes (a face box in the mask) plus the stage's draws."""
    c = model.config
    r, h, lc = c.resolution, c.latent_size, c.vae.latent_channels
    mask = torch.zeros(1, r, r)
    mask[:, r // 5: r - r // 8, r // 4: r - r // 4] = 1
    samples = []
    for i in range(batch_size):
        sample = {"face_mask": mask}
        if stage.number == 0:
            sample["target"] = torch.rand(3, r, r) * 2 - 1
        elif stage.number == 1:
            sample.update(reference_latents=torch.randn(lc, h, h), target_latents=torch.randn(lc, h, h))
        else:
            span = c.num_motion_frames + c.num_frames + 2 * stage.context
            sample.update(reference_latents=torch.randn(lc, h, h),
                          frame_latents=torch.randn(c.num_motion_frames + c.num_frames, lc, h, h),
                          audio_features=torch.randn(span, c.audio.num_feature_rows, c.audio.hidden_size),
                          head_speed=torch.rand(span) * 2, zero_motion=torch.tensor(False))
        sample.update(stage.draw(torch.Generator().manual_seed(i)))
        samples.append(sample)
    return collate(samples)


def step_times(number: int, recipe, batch_size: int, steps: int, warmup: int = 2) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds of each measured step."""
    torch.manual_seed(0)
    model = EmoModel(recipe.model_config())
    zero_init_new_branches(model)
    make_inert_temporal(model)
    crop = getattr(recipe.stage(number), "crop", 0) or model.config.resolution
    stage = build_stage(number, model, recipe, crop=crop)
    names = set(stage.parameter_names())
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = fake_batch(stage, model, batch_size)
    times = []
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss, _ = stage(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times


@torch.inference_mode()
def cache_rates(recipe, seconds: float = 5.0) -> tuple[float, float]:
    """Per CPU second: frames through the VAE encoder (batch 32), seconds of audio through the audio encoder."""
    model = EmoModel(recipe.model_config())
    r = model.config.resolution
    images = torch.rand(32, 3, r, r) * 2 - 1
    model.encode_images(images)
    c0 = time.process_time()
    model.encode_images(images)
    frames = 32 / (time.process_time() - c0)
    audio = torch.randn(1, int(seconds * 16000))
    model.audio_encoder(audio, int(seconds * 25))
    c0 = time.process_time()
    model.audio_encoder(audio, int(seconds * 25))
    return frames, seconds / (time.process_time() - c0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=None, help="override the recipe's batch sizes")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--no-cache-rates", action="store_true")
    args = parser.parse_args()

    base = load_recipe(args.recipe)
    load = os.getloadavg()[0]
    print(f"recipe {args.recipe}, model {base.model}, load average {load:.1f} at start\n")
    # CPU time per step is what a shared machine does not distort: with 1 thread it is about the
    # wall time the step would take on an idle core
    print("| stage | threads | precision | batch | step wall (median) | samples/s (wall) | step CPU (median) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for precision in args.precision:
            data = base.to_dict()
            for k in range(4):
                if data[f"stage{k}"] is not None:
                    data[f"stage{k}"]["precision"] = precision
            recipe = recipe_from_dict(data)
            for number in args.stages:
                batch = args.batch or recipe.stage(number).batch_size
                times = step_times(number, recipe, batch, args.steps)
                wall = statistics.median(t for t, _ in times)
                cpu = statistics.median(c for _, c in times)
                print(f"| {number} | {threads} | {precision} | {batch} | {wall:.3f} s | {batch / wall:.2f} | "
                      f"{cpu:.3f} s |", flush=True)
        if not args.no_cache_rates:
            frames, audio = cache_rates(base)
            print(f"\ncaches ({threads} threads): VAE encoder {frames:.1f} frames per CPU s, "
                  f"audio encoder {audio:.1f} s of audio per CPU s\n")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
