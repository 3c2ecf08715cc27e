"""Probe: where are brows and head speed lost? Teacher-forced windows of test clips (true motion frames,
true audio), rendered as the render does (noised-reference start, DDIM trailing): the student at its 2
steps, the stage-3 teacher at 8 guided steps. The evaluator reads brow, mouth and pose from the drawn
frames and from the decoded true latents (the autoencoder ceiling's frames): r per signal, pooled over
windows. Speed: the same windows with every frame's requested head speed set to the lowest / highest
bucket centre; head speed = mean absolute frame-to-frame change of the evaluator's (yaw, pitch, roll)
over the 4 motion + 8 drawn frames.
r is per clip (windows of a clip pooled), then the mean over clips, as the eval reports it. With
`zero-motion` every window is drawn as a render's first (motion frames zero): then only the speed tokens
can say how fast the head moves.

    python lab/probes/conditioning/teacher_forced_signals.py STUDENT_RUN_STAGE_DIR TEACHER_MODEL [CLIPS] [student,teacher] [zero-motion]
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from emo_rt.eval.evaluator import Evaluator
from emo_rt.models import EmoModel
from emo_rt.models.conditioning import from_diffused
from emo_rt.training.data.datasets import ClipWindowDataset, _mask
from emo_rt.training.distill import DistillStage
from emo_rt.training.recipe import recipe_from_dict
from emo_rt.training.stage_data import audio_cache_dir, collate, latent_cache_dir

torch.set_num_threads(2)
torch.manual_seed(0)
W = Path(sys.argv[1])  # a stage-4 run directory (model/, recipe.json)
student = EmoModel.from_pretrained(W / "model").eval()
teacher = EmoModel.from_pretrained(sys.argv[2]).backbone.eval()
clips = int(sys.argv[3]) if len(sys.argv) > 3 else 6
WHO = sys.argv[4].split(",") if len(sys.argv) > 4 else ["student", "teacher"]
ZERO_MOTION = len(sys.argv) > 5 and sys.argv[5] == "zero-motion"  # every window as a render's first
recipe = recipe_from_dict(json.loads((W / "recipe.json").read_text()))
stage = DistillStage(student, recipe, teacher)
data = Path.home() / "emo-runs/corpus/shards"
ds = ClipWindowDataset(data, "test", student.config.num_frames, student.config.num_motion_frames, stage.context,
                       0.0, latent_cache=latent_cache_dir(data, student), audio_feature_cache=audio_cache_dir(data, student))
n, f, m = ds.n, ds.f, ds.m
evaluator = Evaluator.from_pretrained()
centres = student.config.speed.bucket_centres


def window(clip, start):
    """The dataset's sample for motion frames start..start+n-1 and frames start+n..start+n+f-1; reference frame 0."""
    total = clip.num_frames
    s = {"face_mask": _mask(ds.index, clip), "zero_motion": torch.tensor(ZERO_MOTION), "clip": clip.id}
    s["reference_latents"] = torch.from_numpy(ds.latents.rows(clip, 0, 1)[0])
    s["frame_latents"] = torch.from_numpy(ds.latents.rows(clip, start, start + n + f))
    if ZERO_MOTION:
        s["frame_latents"][:n] = 0
    idx = np.clip(np.arange(start - m, start + n + f + m), 0, total - 1)
    first, last = int(idx[0]), int(idx[-1])
    feats = ds.audio_features.rows(clip, first, last + 1)
    s["audio_features"] = torch.from_numpy(np.ascontiguousarray(feats[idx - first]))
    speed = ds.index.read(clip, "head_speed", first, last + 1)
    s["head_speed"] = torch.from_numpy(np.ascontiguousarray(speed[idx - first], np.float32))
    return s


def to_uint8(z):
    """(B, C, f, h, w) latents -> (B*f, R, R, 3) uint8."""
    b, c, ff, h, w = z.shape
    x = student.decode_latents(z.permute(0, 2, 1, 3, 4).reshape(b * ff, c, h, w))
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def draw(batch, who):
    """Frames' latents (B, C, f, h, w) drawn from the render's start by the student (its steps) or the
    teacher (8 guided steps), as DistillStage.sample does."""
    b = batch["frame_latents"].shape[0]
    batch = dict(batch, noise=torch.randn(b, batch["frame_latents"].shape[2], f, *batch["frame_latents"].shape[-2:],
                                          generator=torch.Generator().manual_seed(0)))
    conditions = stage.conditions(batch, train=False)
    x, t = stage.start_latents(batch, torch.zeros(b, dtype=torch.long))
    for _ in range(stage.student_steps):
        if who == "teacher":
            x = stage.teacher_target(x, t, conditions)
        else:
            x = stage.ddim_step(student.backbone(x, t, **conditions).float(), x, t, stage._prev(t, stage.per_step))
        t = stage._prev(t, stage.per_step)
    return from_diffused(x, stage.anchor(batch), student.config.anchor)


def per_clip_r(a, b, ids):
    """Mean over clips of Pearson r, as the eval reports it."""
    return float(np.mean([np.corrcoef(a[ids == c], b[ids == c])[0, 1] for c in np.unique(ids)]))


def head_speed(readings, b):
    pose = np.stack([readings[k] for k in ("yaw", "pitch", "roll")], 1).reshape(b, -1, 3)  # (B, n+f, 3)
    return float(np.abs(np.diff(pose, axis=1)).sum(-1).mean())


samples = []
for clip in ds.clips[:clips]:
    for start in range(0, clip.num_frames - (n + f) + 1, f):
        samples.append(window(clip, start))
print(f"{len(samples)} windows of {clips} test clips", flush=True)
rows = {}
ids = np.repeat([s["clip"] for s in samples], f)
samples = [{k: v for k, v in s.items() if k != "clip"} for s in samples]
for who in WHO:
    got = {"truth": [], "drawn": []}
    speeds = {}
    for i in range(0, len(samples), 8):
        batch = collate(samples[i:i + 8])
        b = batch["frame_latents"].shape[0]
        truth = batch["frame_latents"][:, n:].transpose(1, 2)
        got["truth"].append(evaluator.measure(to_uint8(truth)))
        got["drawn"].append(evaluator.measure(to_uint8(draw(batch, who))))
        motion = batch["frame_latents"][:, :n].transpose(1, 2)
        speeds.setdefault("real", []).append(head_speed(evaluator.measure(to_uint8(batch["frame_latents"].transpose(1, 2))), b))
        for name, v in (("slowest", centres[0]), ("fastest", centres[-1]), ("true", None)):
            sb = batch if v is None else dict(batch, head_speed=torch.full_like(batch["head_speed"], v))
            z = torch.cat([motion, draw(sb, who)], 2)
            speeds.setdefault(name, []).append(head_speed(evaluator.measure(to_uint8(z)), b))
    cat = {k: {s: np.concatenate([g[s] for g in v]) for s in v[0]} for k, v in got.items()}
    rows[who] = {s: per_clip_r(cat["drawn"][s], cat["truth"][s], ids) for s in ("mouth_open", "brow_raise", "yaw")}
    rows[who].update({f"speed_{k}": float(np.mean(v)) for k, v in speeds.items()})
    print(who, {k: round(v, 3) for k, v in rows[who].items()}, flush=True)
