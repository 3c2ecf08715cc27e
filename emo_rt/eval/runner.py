"""`emo-rt eval`'s work: render held-out clips with a pipeline and score them (lip sync, expression,
identity, flicker, drift, speed control) against the sidecar ground truth, beside an oracle row (the
evaluator on the real test videos) and a floor row (a still video of the reference).

Steps of `evaluate`:
1. the first `clips` held-out clips: reference = frame `reference_frame` of the clip (crop and face
   mask as the shards hold them, no re-cropping), audio = the clip's audio; render, measure
2. drift: one render of the test audio concatenated to `drift_seconds`, its first tenth vs its last
3. speed control: the first clip's audio (cut to `speed_seconds`) at each of `speeds`
4. oracle and floor rows, the evaluator's own figures on every test clip
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from emo_rt.errors import EmoError, InputError
from emo_rt.io.image import FaceBox, Reference
from emo_rt.pipeline import RenderSettings
from emo_rt.pose import head_speed
from emo_rt.runtime.progress import RenderProgress

from . import metrics
from .data import LABELS, EvalClip, HeldOutData
from .distribution import FeatureSpace, distances
from .evaluator import Evaluator
from .scoring import row, score_video

SPEED_SMOOTHING = 2.0  # frames of Gaussian smoothing of the evaluator's pose before head speed (its jitter)


EVAL_RENDER = RenderSettings(steps=8, cfg=1.0)  # CPU-sized defaults: 8 steps, one Backbone pass per step


@dataclass(frozen=True)
class EvalSettings:
    render: RenderSettings = EVAL_RENDER  # how every video is rendered (speed is set per speed render)
    clips: int = 2  # held-out clips rendered (the first ones by id)
    clip_seconds: float | None = None  # cut each clip to this length (None: whole clips)
    split: str = "test"
    reference_frame: int = 0  # the clip frame used as the reference portrait
    drift_seconds: float = 10.0  # 0: no drift render (the figure is over 60 s)
    speeds: tuple[float, ...] | None = None  # deg/frame; None: the model's lowest, middle, highest bucket
    speed_seconds: float = 2.0  # audio length of each speed render; 0: no speed renders
    max_lag: int = 5  # best audio-video offset searched in +/- this many frames
    seeds: int = 1  # the clips rendered at render seeds seed..seed+seeds-1: each figure's mean and sd

    def __post_init__(self) -> None:
        checks = [
            (self.clips >= 1, f"--clips {self.clips}: render at least one clip"),
            (self.clip_seconds is None or self.clip_seconds > 0, f"--clip-seconds {self.clip_seconds}: must be > 0"),
            (self.drift_seconds >= 0, f"--drift-seconds {self.drift_seconds}: give 0 (skip) or a positive length"),
            (self.speed_seconds >= 0, f"--speed-seconds {self.speed_seconds}: give 0 (skip) or a positive length"),
            (self.speeds is None or all(v >= 0 for v in self.speeds), f"--speeds {self.speeds}: speeds are >= 0"),
            (self.max_lag >= 0, f"max_lag {self.max_lag} must be >= 0"),
            (self.seeds >= 1, f"--seeds {self.seeds}: render at least one seed"),
        ]
        for ok, message in checks:
            if not ok:
                raise EmoError(message)


def clip_reference(clip: EvalClip, frame: int) -> Reference:
    """The clip's own frame as the reference portrait (the shard crop is already face-centred)."""
    r = clip.frames.shape[1]
    x, y, w, h = (int(round(v)) for v in clip.face_boxes[frame])
    return Reference(pixels=np.ascontiguousarray(clip.frames[frame]), face_box=FaceBox(x, y, w, h).clipped(r, r),
                     mask=clip.face_mask[None].astype(np.float32), crop_box=FaceBox(0, 0, r, r), face_source="given")


def cut(clip: EvalClip, seconds: float | None, fps: int, samples_per_frame: int) -> EvalClip:
    if seconds is None or seconds * fps >= clip.num_frames:
        return clip
    n = max(1, int(round(seconds * fps)))
    return EvalClip(clip.id, clip.identity, clip.frames[:n], clip.face_mask, clip.face_boxes[:n],
                    clip.audio[:n * samples_per_frame], {k: v[:n] for k, v in clip.truth.items()}, clip.speed_level)


class Evaluation:
    """Holds the pipeline, data and evaluator of one `evaluate` call; renders and scores."""

    def __init__(self, pipeline, data: HeldOutData, evaluator: Evaluator, settings: EvalSettings):
        self.pipeline, self.data, self.evaluator, self.settings = pipeline, data, evaluator, settings
        config = pipeline.config
        self.fps, self.rate = config.fps, config.audio.sample_rate
        if self.fps != data.index.fps or self.rate != data.index.sample_rate:
            raise InputError(f"the model runs at {self.fps} fps / {self.rate} Hz, the data at {data.index.fps} fps / "
                             f"{data.index.sample_rate} Hz")
        self.render_settings = settings.render
        self.window = config.num_frames
        self.timings: list[dict] = []

    def render(self, name: str, reference: Reference, audio: np.ndarray, progress: RenderProgress,
               speed: float | None = None, seed: int | None = None) -> np.ndarray:
        """(N, R, R, 3) uint8 at the data's resolution (model output area-resized when they differ)."""
        progress.stage(name)
        settings = replace(self.render_settings, speed=speed, seed=self.render_settings.seed if seed is None else seed)
        model_res = self.pipeline.config.resolution
        if reference.pixels.shape[0] != model_res:
            reference = _resized_reference(reference, model_res)
        started = time.perf_counter()
        frames = np.concatenate(list(self.pipeline(reference, audio.astype(np.float32), settings, progress=progress)))
        seconds = time.perf_counter() - started
        self.timings.append({"render": name, "frames": len(frames), "seconds": round(seconds, 2),
                             "seconds_per_frame": round(seconds / max(1, len(frames)), 4)})
        progress.print(f"{name}: {len(frames)} frames in {seconds:.1f} s ({seconds / max(1, len(frames)):.3f} s/frame)")
        r = self.data.index.resolution
        if frames.shape[1] != r:
            frames = np.stack([cv2.resize(f, (r, r), interpolation=cv2.INTER_AREA) for f in frames])
        return frames

    def clips(self, entries) -> list[EvalClip]:
        """The first `clips` held-out clips, cut to `clip_seconds`; the reference frame must exist."""
        s = self.settings
        clips = [cut(self.data.load(e), s.clip_seconds, self.fps, self.rate // self.fps) for e in entries[:s.clips]]
        for clip in clips:
            if not 0 <= s.reference_frame < clip.num_frames:
                raise InputError(f"--reference-frame {s.reference_frame}: clip {clip.id} has only "
                                 f"{clip.num_frames} frames")
        return clips

    def drift(self, entries, reference: Reference, frames: int, progress: RenderProgress) -> dict:
        """One render of the split's audio concatenated to `frames` frames, its first tenth vs its last."""
        audio = _long_audio(self.data, entries, frames * (self.rate // self.fps))
        video = self.render(f"drift {frames / self.fps:.0f} s", reference, audio, progress)
        return _drift(video, reference.pixels, self.window, self.fps)

    def speed_control(self, audio: np.ndarray, reference: Reference, speeds: tuple[float, ...], frames: int,
                      progress: RenderProgress) -> dict:
        """One render per requested speed of the same audio; the head speed each one shows."""
        audio = np.resize(audio, frames * (self.rate // self.fps))  # repeats the clip if it is shorter
        measured = [measured_speed(self.evaluator, self.render(f"speed {v:g}", reference, audio, progress, speed=v))
                    for v in speeds]
        return {"speeds": list(speeds), "measured": measured, "rho": metrics.spearman(speeds, measured),
                "slope": metrics.slope(speeds, measured),
                "fastest_over_slowest": measured[-1] / measured[0] if measured[0] > 0 else None}

    def oracle_speed(self, entries) -> dict:
        return self._real_clips(entries)[1]

    def evaluator_figures(self, entries) -> dict:
        return self._real_clips(entries)[0]

    def _real_clips(self, entries) -> tuple[dict, dict]:
        if not hasattr(self, "_real"):
            self._real = _real_clips(self.data, entries, self.evaluator)
        return self._real


def _resized_reference(reference: Reference, size: int) -> Reference:
    r = reference.pixels.shape[0]
    scale = size / r
    box = reference.face_box
    mask = cv2.resize(reference.mask[0], (size, size), interpolation=cv2.INTER_NEAREST)[None]
    return Reference(cv2.resize(reference.pixels, (size, size), interpolation=cv2.INTER_CUBIC),
                     FaceBox(int(box.x * scale), int(box.y * scale), int(box.w * scale), int(box.h * scale)),
                     mask, FaceBox(0, 0, size, size), reference.face_source)


def default_speeds(config, data_buckets: dict | None = None) -> tuple[float, ...]:
    """The lowest, middle and highest speed bucket centres of the evaluated data (fitted to its head
    speeds by `emo-rt preprocess`: the range a model trained on such data has seen), else of the
    model's config (a preset's generic buckets, which may reach speeds no clip had)."""
    centres = sorted((data_buckets or {}).get("centres") or config.speed.bucket_centres)
    return (centres[0], centres[len(centres) // 2], centres[-1])


def evaluate(pipeline, data: HeldOutData, settings: EvalSettings = EvalSettings(), evaluator: Evaluator | None = None,
             progress: bool = True) -> dict:
    """Render and score; returns the report (what report.json holds)."""
    started = time.perf_counter()
    evaluator = evaluator or Evaluator.from_pretrained()
    run = Evaluation(pipeline, data, evaluator, settings)
    entries = data.entries(settings.split)
    clips = run.clips(entries)
    references = [clip_reference(c, settings.reference_frame) for c in clips]
    speeds = (tuple(settings.speeds) if settings.speeds is not None
              else default_speeds(pipeline.config, data.index.speed_buckets))
    speed_frames = int(round(settings.speed_seconds * run.fps)) if speeds else 0
    drift_frames = (max(2 * run.window, int(round(settings.drift_seconds * run.fps)))
                    if settings.drift_seconds > 0 else 0)
    seeds = [settings.render.seed + k for k in range(settings.seeds)]
    total = len(seeds) * sum(c.num_frames for c in clips) + drift_frames + len(speeds) * speed_frames
    with RenderProgress(total, settings.render.steps, enabled=progress, label="eval") as bar:
        # 1. held-out clips (at each seed), 2. drift over a long render, 3. speed control
        model = [run.render(f"clip {c.id}", ref, c.audio, bar) for c, ref in zip(clips, references)]
        other_seeds = {f"model_seed{s}": [run.render(f"clip {c.id}, seed {s}", ref, c.audio, bar, seed=s)
                                          for c, ref in zip(clips, references)] for s in seeds[1:]}
        drift = run.drift(entries, references[0], drift_frames, bar) if drift_frames else None
        speed = run.speed_control(clips[0].audio, references[0], speeds, speed_frames, bar) if speed_frames else None
    # 4. the other rows: the autoencoder's ceiling, the real videos, a known degradation, a still reference
    videos = {"model": model, **other_seeds, "ceiling": [round_trip(pipeline, c.frames) for c in clips],
              "oracle": [c.frames for c in clips], "blurred": [metrics.blurred(c.frames) for c in clips],
              "floor": [np.repeat(r.pixels[None], c.num_frames, axis=0) for c, r in zip(clips, references)]}
    scores = score_rows(videos, clips, references, evaluator, run.rate // run.fps)
    rows = {name: row(scores[name], clips, settings.max_lag, scores["oracle"]) for name in videos}
    rows["other_identity"] = other_identity_row(clips, references, evaluator)
    distances = distribution_distances(videos, clips, evaluator)
    for name, figures in distances.items():
        rows.setdefault(name, {}).update(fid=figures["fid"], fvd=figures["fvd"])
    by_seed = {seeds[0]: rows["model"], **{s: rows.pop(f"model_seed{s}") for s in seeds[1:]}}
    _attach_motion(rows, drift, speed, run.oracle_speed(entries))
    report = {
        "settings": {**asdict(settings.render), **{k: v for k, v in asdict(settings).items() if k != "render"},
                     "speeds": list(speeds)},  # flat: the render's settings beside the eval's
        "data": {"shards": str(data.shards), "corpus": str(data.corpus), "split": settings.split, "fps": run.fps,
                 "clips": [c.id for c in clips], "frames": [c.num_frames for c in clips]},
        "rows": rows, "distances": distances, "drift": drift, "speed_control": speed,
        "seed_spread": seed_spread(by_seed) if len(seeds) > 1 else None,
        "oracle_speed": run.oracle_speed(entries), "evaluator": run.evaluator_figures(entries),
        "curves": [{"clip": c.id, "true": c.truth["mouth_open"].tolist(), "model": m.mouth.tolist(),
                    "oracle": o.mouth.tolist(), "brow_true": c.truth["brow_raise"].tolist(),
                    "brow_model": m.brow.tolist(), "brow_oracle": o.brow.tolist()}
                   for c, m, o in zip(clips, scores["model"], scores["oracle"])],
        "timings": {"renders": run.timings, "render_seconds": round(sum(t["seconds"] for t in run.timings), 1),
                    "rendered_frames": sum(t["frames"] for t in run.timings),
                    "total_seconds": round(time.perf_counter() - started, 1)},
    }
    return report


SPREAD = ("lip_r", "brow_r", "silent_mouth", "flicker", "identity", "face_ssim", "background_psnr",
          "sharpness_ratio", "face_detector", "fid", "fvd")  # the clip figures a render seed moves


def seed_spread(rows_by_seed: dict[int, dict]) -> dict:
    """Each clip figure of the model row at every render seed, with mean and sd (over seeds)."""
    spread = {"seeds": list(rows_by_seed)}
    for key in SPREAD:
        values = [row.get(key) for row in rows_by_seed.values()]
        if None not in values:
            spread[key] = {"values": values, "mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1))}
    return spread


def score_rows(videos: dict[str, list[np.ndarray]], clips: list[EvalClip], references: list[Reference],
               evaluator: Evaluator, samples_per_frame: int) -> dict[str, list]:
    """Every video of every row scored against its clip."""
    statics = [metrics.static_mask(c.frames, c.face_mask) for c in clips]
    silent = [metrics.silent_frames(c.audio, c.num_frames, samples_per_frame) for c in clips]
    return {name: [score_video(v, c, r.pixels, st, evaluator, si)
                   for v, c, r, st, si in zip(frames, clips, references, statics, silent)]
            for name, frames in videos.items()}


def other_identity_row(clips: list[EvalClip], references: list[Reference], evaluator: Evaluator) -> dict:
    """Identity similarity of real frames of another test identity (the next clip whose identity
    differs) to each clip's reference: the floor of the identity figure."""
    if evaluator.identity is None:
        return {"identity": None}
    values = []
    for i, (clip, ref) in enumerate(zip(clips, references)):
        others = [c for c in clips[i + 1:] + clips[:i] if c.identity != clip.identity]
        if others:
            values.append(float(evaluator.identity.similarity(others[0].frames, ref.pixels).mean()))
    return {"identity": float(np.mean(values)) if values else None}


def distribution_distances(videos: dict[str, list[np.ndarray]], clips: list[EvalClip], evaluator: Evaluator) -> dict:
    """Fréchet distances (frame and clip level) of each row's videos to the real clips, and the
    floor: two disjoint halves of the real clips against each other."""
    real = [evaluator.features(c.frames) for c in clips]
    space = FeatureSpace(np.concatenate(real))
    out = {name: distances([evaluator.features(v) for v in frames], real, space)
           for name, frames in videos.items() if name != "oracle"}
    out["oracle"] = distances(real[1::2], real[::2], space) if len(clips) >= 2 else {"fid": None, "fvd": None}
    return out


def round_trip(pipeline, frames: np.ndarray, batch: int = 8) -> np.ndarray:
    """uint8 (N, R, R, 3) frames through the model's own autoencoder (encode, decode), uint8, at the
    frames' resolution (resized to the model's and back when they differ)."""
    from .evaluator import to_tensor

    r, model_res = frames.shape[1], pipeline.config.resolution
    if r != model_res:
        frames = np.stack([cv2.resize(f, (model_res, model_res), interpolation=cv2.INTER_AREA) for f in frames])
    out = []
    for i in range(0, len(frames), batch):
        latents = pipeline.components.encode_images(to_tensor(frames[i:i + batch]))
        images = pipeline.components.decode_latents(latents).float().clamp(-1, 1)
        out.append(((images.permute(0, 2, 3, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy())
    video = np.concatenate(out)
    if r != model_res:
        video = np.stack([cv2.resize(f, (r, r), interpolation=cv2.INTER_AREA) for f in video])
    return video


def _attach_motion(rows: dict, drift: dict | None, speed: dict | None, oracle_speed: dict) -> None:
    for name in rows:
        rows[name].setdefault("drift", None)
        rows[name].setdefault("speed_rho", None)
    rows["model"].update(drift=drift["drift"] if drift else None, speed_rho=speed["rho"] if speed else None)
    rows["oracle"]["speed_rho"] = oracle_speed["rho"]
    rows["floor"].update(drift=0.0 if drift else None, speed_rho=0.0 if speed else None)
    model_lip, oracle_lip = rows["model"]["lip_r"], rows["oracle"]["lip_r"]
    rows["model"]["lip_r_of_oracle"] = model_lip / oracle_lip if model_lip is not None and oracle_lip else None


def _long_audio(data: HeldOutData, entries, samples: int) -> np.ndarray:
    """The split's clips' audio one after another (repeated as needed) up to `samples`."""
    parts, have = [], 0
    while have < samples:
        for entry in entries:
            audio = data.index.read(entry, "audio")
            parts.append(audio)
            have += audio.size
            if have >= samples:
                break
    return np.concatenate(parts)[:samples]


def _drift(video: np.ndarray, reference: np.ndarray, window: int, fps: int) -> dict:
    """Whole-frame SSIM to the reference (face and background: what identity is here) of the first
    and the last tenth of the render (at least one window: a single window of speech weighs an open
    mouth against a closed one), its relative loss, and the curve per second."""
    sim = metrics.ssim(video, reference)
    span = max(window, len(sim) // 10)
    first, last = float(sim[:span].mean()), float(sim[-span:].mean())
    per_second = [float(sim[i:i + fps].mean()) for i in range(0, len(sim), fps)]
    return {"frames": len(video), "window": window, "span": span, "first": first, "last": last,
            "drift": metrics.drift(first, last), "ssim_per_second": per_second}


def measured_speed(evaluator: Evaluator, frames: np.ndarray) -> float:
    """Mean head speed (deg/frame) of a video, from the evaluator's pose."""
    pose = evaluator.measure(frames)
    return float(head_speed(np.stack([pose["yaw"], pose["pitch"], pose["roll"]], 1), SPEED_SMOOTHING).mean())


def _real_clips(data: HeldOutData, entries, evaluator: Evaluator) -> tuple[dict, dict]:
    """The evaluator on every real clip of the split: Pearson r per label (mean over clips), and the
    head speed it reads vs the true mean head speed across clips (the speed measurement's ceiling)."""
    rs = {name: [] for name in LABELS}
    true, measured = [], []
    for entry in entries:
        clip = data.load(entry)
        values = evaluator.measure(clip.frames)
        for name in LABELS:
            if metrics.varies(clip.truth[name]):
                rs[name].append(metrics.pearson(values[name], clip.truth[name]))
        pose = np.stack([values[k] for k in ("yaw", "pitch", "roll")], 1)
        measured.append(float(head_speed(pose, SPEED_SMOOTHING).mean()))
        true.append(float(clip.truth["head_speed"].mean()))
    figures = {"clips": len(entries), "r": {name: float(np.mean(v)) if v else None for name, v in rs.items()},
               "clips_per_label": {name: len(v) for name, v in rs.items()}}
    enough = len(entries) >= 3  # a rank correlation of fewer clips says nothing
    speed = {"clips": len(entries), "true": true, "measured": measured,
             "rho": metrics.spearman(true, measured) if enough else None,
             "slope": metrics.slope(true, measured) if enough else None}
    return figures, speed


def load_pipeline(weights: str | Path | None, backend: str = "torch", engines: str | Path | None = None,
                  dtype: str = "float32", device: str = "cpu"):
    """The pipeline `emo-rt eval` renders with: the torch model, or the engines of another backend
    (built for these weights by `emo-rt build-engines`)."""
    import torch

    from emo_rt.pipeline import EmoPipeline

    if engines is not None and backend == "torch":
        raise EmoError("--engines is for --backend onnxruntime, openvino or tensorrt "
                       "(torch runs the weights themselves)")
    return EmoPipeline.from_pretrained(weights, dtype=getattr(torch, dtype), device=device, backend=backend,
                                       engine_dir=engines)
