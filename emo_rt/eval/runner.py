"""`emo-rt eval`'s work: render held-out clips with a pipeline and score them (lip sync, expression,
identity, flicker, drift, speed control) against the sidecar ground truth, beside an oracle row (the
evaluator on the real test videos) and a floor row (a still video of the reference).

Steps of `evaluate`:
1. the first `clips` held-out clips: reference = frame `reference_frame` of the clip (crop and face
   mask as the shards hold them, no re-cropping), audio = the clip's audio; render, measure
2. drift: one render of the test audio concatenated to `drift_seconds`, first window vs last
3. speed control: the first clip's audio (cut to `speed_seconds`) at each of `speeds`
4. oracle and floor rows, the evaluator's own figures on every test clip
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from emo_rt.errors import EmoError, InputError
from emo_rt.io.image import FaceBox, Reference

from . import metrics
from .data import LABELS, EvalClip, HeldOutData
from .evaluator import Evaluator


@dataclass(frozen=True)
class EvalSettings:
    clips: int = 2  # held-out clips rendered (the first ones by id)
    clip_seconds: float | None = None  # cut each clip to this length (None: whole clips)
    split: str = "test"
    scheduler: str = "ddim"
    steps: int = 8
    cfg: float = 1.0
    guide: str = "all"  # RenderSettings.guide
    start: str = "reference"  # RenderSettings.start
    seed: int = 0
    reference_frame: int = 0  # the clip frame used as the reference portrait
    drift_seconds: float = 10.0  # 0: no drift render (the figure is over 60 s)
    speeds: tuple[float, ...] | None = None  # deg/frame; None: the model's lowest, middle, highest bucket
    speed_seconds: float = 2.0  # audio length of each speed render; 0: no speed renders
    max_lag: int = 5  # best audio-video offset searched in +/- this many frames

    def __post_init__(self) -> None:
        from emo_rt.pipeline import GUIDES, STARTS

        checks = [
            (self.clips >= 1, f"--clips {self.clips}: render at least one clip"),
            (self.steps >= 1, f"--steps {self.steps}: give at least one denoising step"),
            (self.clip_seconds is None or self.clip_seconds > 0, f"--clip-seconds {self.clip_seconds}: must be > 0"),
            (self.drift_seconds >= 0, f"--drift-seconds {self.drift_seconds}: give 0 (skip) or a positive length"),
            (self.speed_seconds >= 0, f"--speed-seconds {self.speed_seconds}: give 0 (skip) or a positive length"),
            (self.speeds is None or all(v >= 0 for v in self.speeds), f"--speeds {self.speeds}: speeds are >= 0"),
            (self.max_lag >= 0, f"max_lag {self.max_lag} must be >= 0"),
            (self.guide in GUIDES, f"--guide {self.guide}: choose one of {', '.join(GUIDES)}"),
            (self.start in STARTS, f"--start {self.start}: choose one of {', '.join(STARTS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise EmoError(message)


@dataclass
class VideoScores:
    """One video of one clip scored against the clip's truth and reference."""

    lip_r: float
    brow_r: float
    face_ssim: float  # mean over frames, inside the clip's face box
    background_psnr: float  # mean over frames, outside the face box (dB)
    flicker: float  # 0..255 levels, frame-to-frame change on the clip's static pixels
    mouth: np.ndarray = field(repr=False)  # (N,) evaluator mouth opening
    brow: np.ndarray = field(repr=False)


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


def score_video(frames: np.ndarray, clip: EvalClip, reference: np.ndarray, static: np.ndarray,
                evaluator: Evaluator) -> VideoScores:
    """frames (N, R, R, 3) uint8 at the clip's resolution."""
    measured = evaluator.measure(frames)
    face = clip.face_mask.astype(bool)
    return VideoScores(
        lip_r=metrics.pearson(measured["mouth_open"], clip.truth["mouth_open"]),
        brow_r=metrics.pearson(measured["brow_raise"], clip.truth["brow_raise"]),
        face_ssim=float(metrics.ssim(frames, reference, face).mean()),
        background_psnr=float(metrics.psnr(frames, reference, ~face).mean()),
        flicker=metrics.flicker(frames, static),
        mouth=measured["mouth_open"], brow=measured["brow_raise"])


def _mean_where_truth_varies(values: list[float], clips: list[EvalClip], label: str) -> float | None:
    kept = [v for v, c in zip(values, clips) if metrics.varies(c.truth[label])]
    return float(np.mean(kept)) if kept else None


def row(scores: list[VideoScores], clips: list[EvalClip], max_lag: int) -> dict:
    """Means over clips (lip / brow r over the clips whose true curve moves) and the best offset."""
    offset, offset_r = metrics.best_offset([s.mouth for s in scores], [c.truth["mouth_open"] for c in clips], max_lag)
    mean = lambda name: float(np.mean([getattr(s, name) for s in scores]))  # noqa: E731
    return {"lip_r": _mean_where_truth_varies([s.lip_r for s in scores], clips, "mouth_open"),
            "offset": offset, "offset_r": offset_r,
            "brow_r": _mean_where_truth_varies([s.brow_r for s in scores], clips, "brow_raise"),
            "face_ssim": mean("face_ssim"), "background_psnr": mean("background_psnr"), "flicker": mean("flicker"),
            "per_clip": [{"clip": c.id, "lip_r": s.lip_r, "brow_r": s.brow_r, "face_ssim": s.face_ssim,
                          "background_psnr": s.background_psnr, "flicker": s.flicker} for s, c in zip(scores, clips)]}


class EvalProgress:
    """One bar over every frame the evaluation renders (duck-types RenderProgress for the pipeline)."""

    def __init__(self, total_frames: int, steps: int, enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.enabled = enabled
        self.progress = Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), disable=not enabled)
        self.frames = self.progress.add_task("eval", total=total_frames)
        self.steps = self.progress.add_task("  steps", total=steps)

    def __enter__(self) -> "EvalProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def stage(self, name: str) -> None:
        self.progress.update(self.frames, description=name)

    def advance_step(self) -> None:
        self.progress.advance(self.steps)

    def advance_window(self, frames: int) -> None:
        self.progress.advance(self.frames, frames)
        self.progress.reset(self.steps)

    def print(self, text: str) -> None:
        if self.enabled:
            self.progress.console.print(text)


class Evaluation:
    """Holds the pipeline, data and evaluator of one `evaluate` call; renders and scores."""

    def __init__(self, pipeline, data: HeldOutData, evaluator: Evaluator, settings: EvalSettings):
        from emo_rt.pipeline import RenderSettings

        self.pipeline, self.data, self.evaluator, self.settings = pipeline, data, evaluator, settings
        config = pipeline.config
        self.fps, self.rate = config.fps, config.audio.sample_rate
        if self.fps != data.index.fps or self.rate != data.index.sample_rate:
            raise InputError(f"the model runs at {self.fps} fps / {self.rate} Hz, the data at {data.index.fps} fps / "
                             f"{data.index.sample_rate} Hz")
        self.render_settings = RenderSettings(scheduler=settings.scheduler, steps=settings.steps, cfg=settings.cfg,
                                              guide=settings.guide, start=settings.start, seed=settings.seed)
        self.window = config.num_frames
        self.timings: list[dict] = []

    def render(self, name: str, reference: Reference, audio: np.ndarray, progress: EvalProgress,
               speed: float | None = None) -> np.ndarray:
        """(N, R, R, 3) uint8 at the data's resolution (model output area-resized when they differ)."""
        progress.stage(name)
        settings = replace(self.render_settings, speed=speed)
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
    fps, spf = run.fps, run.rate // run.fps
    entries = data.entries(settings.split)
    chosen = entries[:max(1, settings.clips)]
    clips = [cut(data.load(e), settings.clip_seconds, fps, spf) for e in chosen]
    for clip in clips:
        if not 0 <= settings.reference_frame < clip.num_frames:
            raise InputError(f"--reference-frame {settings.reference_frame}: clip {clip.id} has only "
                             f"{clip.num_frames} frames")
    speeds = (tuple(settings.speeds) if settings.speeds is not None
              else default_speeds(pipeline.config, data.index.speed_buckets))
    speed_frames = int(round(settings.speed_seconds * fps)) if speeds else 0
    drift_frames = max(2 * run.window, int(round(settings.drift_seconds * fps))) if settings.drift_seconds > 0 else 0
    total = sum(c.num_frames for c in clips) + drift_frames + len(speeds) * speed_frames

    model_scores, oracle_scores, floor_scores = [], [], []
    references = [clip_reference(c, settings.reference_frame) for c in clips]
    with EvalProgress(total, settings.steps, enabled=progress) as bar:
        # 1. held-out clips
        for clip, ref in zip(clips, references):
            static = metrics.static_mask(clip.frames, clip.face_mask)
            video = run.render(f"clip {clip.id}", ref, clip.audio, bar)
            model_scores.append(score_video(video, clip, ref.pixels, static, evaluator))
            oracle_scores.append(score_video(clip.frames, clip, ref.pixels, static, evaluator))
            still = np.repeat(ref.pixels[None], clip.num_frames, axis=0)
            floor_scores.append(score_video(still, clip, ref.pixels, static, evaluator))
        # 2. drift over a long render
        drift = None
        if drift_frames:
            audio = _long_audio(data, entries, drift_frames * spf)
            video = run.render(f"drift {drift_frames / fps:.0f} s", references[0], audio, bar)
            drift = _drift(video, references[0].pixels, run.window, fps)
        # 3. speed control
        speed = None
        if speed_frames:
            audio = np.resize(clips[0].audio, speed_frames * spf)  # repeats the clip if it is shorter
            measured = [measured_speed(evaluator, run.render(f"speed {v:g}", references[0], audio, bar, speed=v))
                        for v in speeds]
            speed = {"speeds": list(speeds), "measured": measured, "rho": metrics.spearman(speeds, measured),
                     "slope": metrics.slope(speeds, measured)}

    # 4. rows
    evaluator_figures, oracle_speed = _real_clips(data, entries, evaluator)
    report = {
        "settings": {**asdict(settings), "speeds": list(speeds)},
        "data": {"shards": str(data.shards), "corpus": str(data.corpus), "split": settings.split, "fps": fps,
                 "clips": [c.id for c in clips], "frames": [c.num_frames for c in clips]},
        "rows": {
            "model": {**row(model_scores, clips, settings.max_lag),
                      "drift": drift["drift"] if drift else None, "speed_rho": speed["rho"] if speed else None},
            "oracle": {**row(oracle_scores, clips, settings.max_lag), "drift": None,
                       "speed_rho": oracle_speed["rho"]},
            "floor": {**row(floor_scores, clips, settings.max_lag), "drift": 0.0 if drift else None,
                      "speed_rho": 0.0 if speed else None},
        },
        "drift": drift,
        "speed_control": speed,
        "oracle_speed": oracle_speed,
        "evaluator": evaluator_figures,
        "curves": [{"clip": c.id, "true": c.truth["mouth_open"].tolist(), "model": m.mouth.tolist(),
                    "oracle": o.mouth.tolist(), "brow_true": c.truth["brow_raise"].tolist(),
                    "brow_model": m.brow.tolist(), "brow_oracle": o.brow.tolist()}
                   for c, m, o in zip(clips, model_scores, oracle_scores)],
        "timings": {"renders": run.timings, "render_seconds": round(sum(t["seconds"] for t in run.timings), 1),
                    "rendered_frames": sum(t["frames"] for t in run.timings),
                    "total_seconds": round(time.perf_counter() - started, 1)},
    }
    model_lip, oracle_lip = report["rows"]["model"]["lip_r"], report["rows"]["oracle"]["lip_r"]
    report["rows"]["model"]["lip_r_of_oracle"] = (model_lip / oracle_lip if model_lip is not None and oracle_lip
                                                  else None)
    return report


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
    and the last window of `window` frames, and its relative loss; the curve per second."""
    sim = metrics.ssim(video, reference)
    first, last = float(sim[:window].mean()), float(sim[-window:].mean())
    per_second = [float(sim[i:i + fps].mean()) for i in range(0, len(sim), fps)]
    return {"frames": len(video), "window": window, "first": first, "last": last,
            "drift": metrics.drift(first, last), "ssim_per_second": per_second}


def measured_speed(evaluator: Evaluator, frames: np.ndarray) -> float:
    """Mean head speed (deg/frame) of a video, from the evaluator's pose."""
    pose = evaluator.measure(frames)
    return float(metrics.head_speed(np.stack([pose["yaw"], pose["pitch"], pose["roll"]], 1)).mean())


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
        measured.append(float(metrics.head_speed(np.stack([values[k] for k in ("yaw", "pitch", "roll")], 1)).mean()))
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
        raise EmoError("--engines is for --backend onnxruntime or tensorrt (torch runs the weights themselves)")
    return EmoPipeline.from_pretrained(weights, dtype=getattr(torch, dtype), device=device, backend=backend,
                                       engine_dir=engines)
