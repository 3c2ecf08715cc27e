"""Toy shard sets for trainer tests and benchmarks: simply drawn faces whose mouth follows a sine
voice's loudness, written with ShardWriter in the documented format (docs/data-format.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emo_rt.io.shards import ClipData, ShardWriter

SAMPLE_RATE = 16000
FPS = 25


def toy_clip(rng: np.random.Generator, num_frames: int, resolution: int, with_audio: bool = True) -> ClipData:
    """One clip: a face (skin ellipse, eyes, mouth) on a plain background, drifting sideways."""
    r = resolution
    spf = SAMPLE_RATE // FPS
    # loudness per frame: syllable-like bumps with pauses, 0..1
    loud = np.clip(np.sin(np.linspace(0, rng.uniform(6, 12), num_frames) + rng.uniform(0, 6)), 0, None)
    loud *= rng.uniform(0.5, 1.0, num_frames) ** 0.3
    audio = None
    if with_audio:
        t = np.arange(num_frames * spf) / SAMPLE_RATE
        envelope = np.repeat(loud, spf)
        audio = (0.5 * envelope * np.sin(2 * np.pi * rng.uniform(110, 240) * t)
                 + 0.003 * rng.standard_normal(t.shape)).astype(np.float32)
    # head: horizontal drift (a random walk), yaw proportional to it
    drift = np.cumsum(rng.normal(0, rng.uniform(0.2, 1.5), num_frames))
    drift = np.clip(drift - drift.mean(), -r * 0.08, r * 0.08)
    pose = np.zeros((num_frames, 3), np.float32)
    pose[:, 0] = drift * 40.0 / r
    speed = np.r_[0.0, np.linalg.norm(np.diff(pose, axis=0), axis=1)].astype(np.float32)

    background = rng.integers(30, 220, 3)
    skin = rng.integers(120, 240, 3)
    yy, xx = np.mgrid[0:r, 0:r].astype(np.float32) + 0.5
    frames = np.empty((num_frames, r, r, 3), np.uint8)
    boxes = np.empty((num_frames, 4), np.float32)
    for k in range(num_frames):
        cx, cy, rx, ry = r / 2 + drift[k], r * 0.52, r * 0.26, r * 0.34
        img = np.broadcast_to(background, (r, r, 3)).astype(np.float32).copy()
        img[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1] = skin
        for ex in (cx - rx * 0.4, cx + rx * 0.4):  # eyes
            img[((xx - ex) / (rx * 0.14)) ** 2 + ((yy - (cy - ry * 0.25)) / (ry * 0.08)) ** 2 <= 1] = (25, 25, 30)
        mouth_h = ry * (0.03 + 0.2 * loud[k])  # the mouth opens with the voice
        img[((xx - cx) / (rx * 0.4)) ** 2 + ((yy - (cy + ry * 0.45)) / mouth_h) ** 2 <= 1] = (120, 20, 30)
        frames[k] = img.astype(np.uint8)
        boxes[k] = (cx - rx, cy - ry, 2 * rx, 2 * ry)
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
    mask = ((xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)).astype(np.uint8)
    return ClipData(frames=frames, face_mask=mask, face_boxes=boxes, pose=pose, head_speed=speed, audio=audio)


def write_toy_shards(out_dir: str | Path, num_clips: int = 4, num_frames: int = 24, resolution: int = 64,
                     seed: int = 0, with_audio: bool = True, clips_per_shard: int = 2,
                     val_clips: int = 0) -> Path:
    """Write `num_clips` train clips (+ `val_clips` in split "val") as shards; returns out_dir."""
    rng = np.random.default_rng(seed)
    writer = ShardWriter(out_dir, resolution, FPS, SAMPLE_RATE, clips_per_shard=clips_per_shard)
    for i in range(num_clips + val_clips):
        split = "train" if i < num_clips else "val"
        writer.add(f"c{i:05d}", toy_clip(rng, num_frames, resolution, with_audio), split=split,
                   identity=f"id{i:04d}", source=f"toy/c{i:05d}")
    writer.close(speed_buckets={"centres": [0.0, 0.5, 1.0, 2.0], "radii": [0.5, 0.5, 0.5, 1.0]})
    return Path(out_dir)


# a tiny model at test scale: the tiny preset at 64x64 pixels (8x8 latents), 2 frames + 1 motion frame
# prosody as in the shipped recipe, so toy runs cache and train the prosody row too
TOY_MODEL_OVERRIDES = {"resolution": 64, "num_frames": 2, "num_motion_frames": 1, "audio": {"prosody": True}}


def toy_recipe(steps: int = 3, batch_size: int = 2, **changes) -> dict:
    """A recipe (as YAML data) for toy runs; `changes` update every stage section, e.g. lr=1e-3."""
    common = {"steps": steps, "batch_size": batch_size, "lr": 1e-3, "checkpoint_every": 100, "log_every": 100,
              "sample_every": 0, **changes}
    return {
        "model": "tiny", "model_overrides": dict(TOY_MODEL_OVERRIDES), "seed": 0,
        "diffusion": {"prediction_type": "v_prediction"},
        "stage0": {**common, "crop": 32, "scaling_samples": 16},
        "stage1": {**common, "sample_steps": 2},
        "stage2": {**common, "sample_steps": 2},
        "stage3": {**common, "sample_steps": 2, "ema_decay": 0.5},
        "stage4": {**common, "sample_steps": 2, "teacher_steps": 4, "student_steps": 2, "guidance": 3.0},
    }


def write_recipe(path: str | Path, data: dict) -> Path:
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def ensure_toy_run(base: str | Path, steps: int = 3) -> dict[str, Path]:
    """Toy shards plus a run through stages 0-3 (`steps` steps each) under `base`, made once and
    reused (tests in several modules share it): {"data", "recipe", "run"}."""
    from emo_rt.training.plan import stage_paths
    from emo_rt.training.trainer import train

    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    data = base / "data"
    if not (data / "index.json").is_file():
        write_toy_shards(data, num_clips=4, num_frames=12, resolution=64, val_clips=1)
    recipe = write_recipe(base / "recipe.yaml", toy_recipe(steps=steps))
    run = base / "run"
    for stage in range(4):
        if not (stage_paths(run, stage).model / "training.json").is_file():
            train(recipe, stage, data, run, resume=True, progress=False)
    return {"data": data, "recipe": recipe, "run": run}
