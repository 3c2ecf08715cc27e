"""EmoPipeline: one portrait + one audio track -> video frames, window after window.

Steps of a render:
1. audio -> mono 16 kHz -> AudioEncoder features (chunked) at the video fps: for the whole file
   at once, or chunk by chunk as a stream's audio arrives (`EmoPipeline.stream`)
2. reference -> face-centred crop -> VAE latents -> ReferenceNet features (once per identity);
   face mask -> FaceLocator (once); head-speed curve (once)
3. per window of f frames: motion features from the previous window's last n latents (zeros for
   the first window), audio/speed tokens for the window, then the denoising loop, where only the
   Backbone runs; then VAE decode, yielded as uint8 frames. The denoising of window k+1 overlaps
   the decode (and the caller's encode) of window k (`RenderSettings.overlap`).
One loop (`EmoPipeline.window_latents`) runs every render, offline or streamed; `render()` streams
its frames into an mp4 with the input audio muxed.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from emo_rt.config import EmoConfig
from emo_rt.errors import InputError, WeightsError
from emo_rt.io.audio import is_silent, num_video_frames
from emo_rt.io.audio_stream import StreamResampler, mono_piece
from emo_rt.io.image import FaceBox, Reference, load_image, prepare_reference
from emo_rt.io.preview import contact_sheet, preview_indices
from emo_rt.io.video import VideoWriter
from emo_rt.models.conditioning import (
    from_diffused,
    null_audio_tokens,
    null_reference_features,
    to_diffused,
)
from emo_rt.runtime.components import Components
from emo_rt.runtime.overlap import Overlapped
from emo_rt.runtime.reference_cache import ReferenceCache
from emo_rt.schedulers import make_scheduler, noise_schedule

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
STARTS = ("reference", "noise")  # RenderSettings.start: what each window's first latents are


@dataclass(frozen=True)
class RenderSettings:
    scheduler: str = "ddim"
    steps: int = 40
    cfg: float = 3.5  # guidance on reference + audio; 1.0 = one Backbone pass per step
    start: str = "reference"  # "reference": its latents noised to the first timestep, or "noise"
    speed: float | None = None  # constant head speed (deg/frame); None = the middle bucket
    seed: int = 0
    audio_chunk_seconds: float = 30.0  # the audio encoder sees at most this much at once
    batch_guidance: bool = True  # guidance's (conditional, unconditional) pair as one batch of 2, or two passes
    overlap: bool = True  # denoise window k+1 while window k is decoded and encoded (same frames)

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise InputError(f"start {self.start!r}: choose one of {', '.join(STARTS)}")


class StageTimer:
    """Wall seconds per stage of a sequential render (denoise, decode, encode); overlapped stages
    share the clock, so only the whole render is timed then."""

    def __init__(self):
        self.seconds = {"denoise": 0.0, "decode": 0.0, "encode": 0.0}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started


@dataclass
class RenderStats:
    frames: int = 0
    video_seconds: float = 0.0
    wall_seconds: float = 0.0
    input_backend: str = ""  # what read the files: "dali" or "fallback" (`Inputs.input_backend`)
    first_frames_seconds: float | None = None  # from the call to the first window's frames handed to the writer

    @property
    def real_time_factor(self) -> float:
        """Wall time per second of video: below 1.0 is faster than real time."""
        return self.wall_seconds / self.video_seconds if self.video_seconds else float("nan")

    def line(self) -> str:
        first = (f", first frames after {self.first_frames_seconds:.2f} s"
                 if self.first_frames_seconds is not None else "")
        return (f"{self.frames} frames ({self.video_seconds:.2f} s of video) in {self.wall_seconds:.1f} s: "
                f"real-time factor {self.real_time_factor:.2f}{first}")


RENDER_FILE = "render.json"  # in a model directory: the settings it was made to render with


@dataclass(frozen=True)
class ModelRenderSettings:
    """What a model directory's render.json holds: the sampler, step count, guidance and start the
    model renders best with (a distilled model needs few steps and no guidance pass)."""

    scheduler: str
    steps: int
    cfg: float
    start: str


def model_render_settings(model_dir: str | Path) -> RenderSettings:
    """RenderSettings with the model directory's render.json applied (RenderSettings' own without one)."""
    from emo_rt.parse import ParseError, parse

    path = Path(model_dir) / RENDER_FILE
    if not path.is_file():
        return RenderSettings()
    try:
        recorded = parse(ModelRenderSettings, json.loads(path.read_text()), require_all=True)
    except (ParseError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: {err}") from None
    return replace(RenderSettings(), **asdict(recorded))


def write_model_render_settings(model_dir: str | Path, settings: RenderSettings) -> Path:
    from emo_rt.io.files import write_json_atomic

    recorded = ModelRenderSettings(settings.scheduler, settings.steps, settings.cfg, settings.start)
    return write_json_atomic(Path(model_dir) / RENDER_FILE, asdict(recorded))


def default_model_dir() -> Path:
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise WeightsError("no default model is installed yet: pass --weights DIR (a model directory "
                           "with config.json and *.safetensors, e.g. from `emo-rt train` or `emo-rt new-model`)")
    return DEFAULT_MODEL_DIR


class SpeedCurve:
    """Per-frame head speed (deg/frame): a constant, or a file of per-second values (one per line or
    comma-separated, read once), linearly interpolated to frames."""

    def __init__(self, speed: float | str | Path | None, default: float):
        self.constant = default if speed is None else float(speed) if isinstance(speed, (int, float)) else None
        self.values = None if self.constant is not None else self._read(Path(speed))

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        try:
            values = np.array([float(v) for v in path.read_text().replace(",", " ").split()], np.float32)
        except (OSError, ValueError) as err:
            raise InputError(f"speed curve {path}: {err}") from None
        if values.size == 0:
            raise InputError(f"speed curve {path} has no values")
        return values

    def frames(self, first: int, stop: int, fps: int) -> np.ndarray:
        """The speeds of frames [first, stop) (stop - first,) float32."""
        if self.values is None:
            return np.full(stop - first, self.constant, np.float32)
        seconds = np.arange(first, stop) / fps
        return np.interp(seconds, np.arange(self.values.size), self.values).astype(np.float32)


def speed_curve(speed: float | str | Path | None, num_frames: int, fps: int, default: float) -> np.ndarray:
    """Per-frame head speed (F,) of a whole file (SpeedCurve)."""
    return SpeedCurve(speed, default).frames(0, num_frames, fps)


@dataclass(frozen=True)
class AudioChunking:
    """How the audio encoder hears a file: chunks of `frames` video frames, each encoded with
    `context` frames of audio on either side (fewer at the ends of the file)."""

    frames: int  # K = chunk seconds * fps
    context: int
    fps: int
    rate: int  # audio samples per second

    @classmethod
    def of(cls, config: EmoConfig, chunk_seconds: float, context_seconds: float = 1.0) -> AudioChunking:
        fps = config.fps
        return cls(max(1, int(chunk_seconds * fps)), int(context_seconds * fps), fps, config.audio.sample_rate)

    def span(self, start: int, num_frames: int, num_samples: int) -> tuple[int, int, int, int, int]:
        """(stop, lo, hi, s0, s1) of the chunk at frame `start` of a file of `num_frames` frames and
        `num_samples` samples: its frames [start, stop), encoded as frames [lo, hi) = samples [s0, s1)."""
        stop = min(start + self.frames, num_frames)
        lo, hi = max(0, start - self.context), min(num_frames, stop + self.context)
        return stop, lo, hi, lo * self.rate // self.fps, min(num_samples, math.ceil(hi * self.rate / self.fps))

    def samples_for(self, start: int) -> int:
        """Samples after which the chunk at `start` is what it is in any longer file (its right context is in)."""
        return math.ceil((start + self.frames + self.context) * self.rate / self.fps)


@dataclass(frozen=True)
class FeatureSpan:
    """Audio features and head speeds of frames [first, first + features.shape[1]) on the device."""

    features: torch.Tensor  # (1, n, L, D)
    speeds: torch.Tensor  # (1, n)
    first: int
    total: int | None  # the file's frame count F; None while a stream's audio has not ended


class WholeAudio:
    """The window loop's audio when the file is all there: features for every frame at once
    (`EmoPipeline.audio_features`), computed when the first window asks."""

    def __init__(self, pipeline: EmoPipeline, waveform: np.ndarray, settings: RenderSettings, device):
        self.pipeline, self.waveform, self.settings, self.device = pipeline, waveform, settings, device
        self._span: FeatureSpan | None = None

    def frames(self, first: int, stop: int, cancelled: Callable[[], bool]) -> FeatureSpan:
        if self._span is None:
            config = self.pipeline.config
            total = num_video_frames(self.waveform.size, config.audio.sample_rate, config.fps)
            default_speed = float(np.median(config.speed.bucket_centres))
            speeds = torch.from_numpy(speed_curve(self.settings.speed, total, config.fps, default_speed))[None]
            features = self.pipeline.audio_features(self.waveform, total, self.settings.audio_chunk_seconds)
            self._span = FeatureSpan(features.to(self.device), speeds.to(self.device), 0, total)
        return self._span


class StreamedAudio:
    """The window loop's audio when it arrives in pieces (a TTS engine, a microphone): each chunk is
    encoded once its audio and its right context are in (or the stream has ended), from exactly the
    samples the whole file's chunk holds, so the features equal `EmoPipeline.audio_features` of the
    whole file. `frames` pulls pieces from `pieces` until the frames asked for have features; frames
    no later window needs are let go, so a long stream holds a few chunks."""

    def __init__(self, pipeline: EmoPipeline, pieces: Iterable[np.ndarray], settings: RenderSettings, device,
                 sample_rate: int | None = None):
        config = pipeline.config
        self.pipeline, self.device = pipeline, device
        self.chunking = AudioChunking.of(config, settings.audio_chunk_seconds)
        self.speeds = SpeedCurve(settings.speed, float(np.median(config.speed.bucket_centres)))
        rate = config.audio.sample_rate
        self._resampler = StreamResampler(sample_rate, rate) if sample_rate and sample_rate != rate else None
        self._pieces = iter(pieces)
        self._samples = np.zeros(0, np.float32)  # model-rate samples from self._offset on
        self._offset = 0
        self.received = 0  # model-rate samples so far
        self.total: int | None = None  # frames, once the stream has ended
        self._parts: list[tuple[int, torch.Tensor]] = []  # (first frame, features (1, k, L, D)) of encoded chunks
        self.encoded = 0  # frames [0, encoded) have features

    def _covers(self, stop: int) -> bool:
        return self.encoded >= (stop if self.total is None else min(stop, self.total))

    def _receive(self) -> None:
        """Take one more piece from the stream (blocks on it), or note its end."""
        piece = next(self._pieces, None)
        if piece is None:
            if self._resampler is not None:
                self._append(self._resampler.flush())
            if self.received == 0:
                raise InputError("the audio stream ended without a single sample")
            config = self.pipeline.config
            self.total = num_video_frames(self.received, config.audio.sample_rate, config.fps)
            return
        samples = mono_piece(piece)
        self._append(self._resampler.push(samples) if self._resampler is not None else samples)

    def _append(self, samples: np.ndarray) -> None:
        self._samples = np.concatenate([self._samples, samples])
        self.received += samples.size

    def _encode_next(self) -> bool:
        """Encode the next chunk if its audio is in; False if it needs more."""
        start, chunking = self.encoded, self.chunking
        if self.total is None:
            if self.received < chunking.samples_for(start):
                return False
            num_frames = num_video_frames(self.received, chunking.rate, chunking.fps)  # > the chunk's hi
        else:
            num_frames = self.total
        stop, lo, hi, s0, s1 = chunking.span(start, num_frames, self.received)
        wave = torch.from_numpy(self._samples[s0 - self._offset: s1 - self._offset])[None]
        feats = self.pipeline.components.encode_audio(wave, hi - lo)[:, start - lo: stop - lo]
        self._parts.append((start, feats.to(self.device)))
        self.encoded = stop
        keep_from = max(0, stop - chunking.context) * chunking.rate // chunking.fps  # the next chunk's s0
        self._samples, self._offset = self._samples[keep_from - self._offset:], keep_from
        return True

    def frames(self, first: int, stop: int, cancelled: Callable[[], bool]) -> FeatureSpan | None:
        """Features of at least frames [first, stop) (to the end, where the stream ended before
        `stop`); blocks until they exist. None when `cancelled()` turned true meanwhile."""
        while not self._covers(stop):
            if cancelled():
                return None
            if not self._encode_next():
                self._receive()
        while len(self._parts) > 1 and self._parts[1][0] <= first:  # chunks before `first`: no window needs them
            self._parts.pop(0)
        base = self._parts[0][0]
        features = torch.cat([feats for _, feats in self._parts], dim=1)
        speeds = torch.from_numpy(self.speeds.frames(base, self.encoded, self.chunking.fps))[None].to(self.device)
        return FeatureSpan(features, speeds, base, self.total)


class EmoPipeline:
    """Runs the render loop on any `Components` backend."""

    def __init__(self, components: Components, schedule: dict, reference_cache: ReferenceCache | None = None,
                 defaults: RenderSettings = RenderSettings()):
        self.components = components
        self.config: EmoConfig = components.config
        self.schedule = schedule
        self.reference_cache = reference_cache or ReferenceCache()  # in memory only unless given a directory
        self.defaults = defaults  # the model's own sampler, steps, guidance (its render.json)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, dtype: torch.dtype | None = torch.float32,
                        device: str = "cpu", attention: str = "auto", backend: str = "torch",
                        engine_dir: str | Path | None = None,
                        reference_cache: str | Path | None = None, cuda_graphs: bool = False,
                        threads: int | None = None) -> EmoPipeline:
        """The pipeline on `backend` (emo_rt.runtime.backends.BACKENDS): torch runs the model on
        `device` with `attention`; onnxruntime / openvino / tensorrt run the engines in `engine_dir`,
        built for this model by `emo-rt build-engines` (fp32 or fp16 by `dtype`; refused when stale;
        None: the backend's default, see load_components).
        `threads`: onnxruntime's and openvino's threads per call (default: theirs; torch's are
        torch.set_num_threads'). `reference_cache`: a directory that keeps reference features across
        renders (emo_rt.runtime.reference_cache)."""
        from emo_rt.runtime.backends import load_components
        from emo_rt.runtime.reference_cache import weights_key

        model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        options = {"device": device, "attention": attention} if backend == "torch" else {}
        if cuda_graphs:  # torch and tensorrt: replay the denoising step as CUDA graphs
            options["cuda_graphs"] = True
        if threads is not None and backend in ("onnxruntime", "openvino"):
            options["threads"] = threads
        components = load_components(backend, model_dir, engine_dir, dtype, **options)
        cache = ReferenceCache(reference_cache, weights_key(model_dir)) if reference_cache is not None else None
        return cls(components, noise_schedule(model_dir), cache, model_render_settings(model_dir))

    # ---- step 1: audio ----------------------------------------------------------------------
    def audio_features(self, waveform: np.ndarray, num_frames: int, chunk_seconds: float,
                       context_seconds: float = 1.0) -> torch.Tensor:
        """(S,) 16 kHz -> (1, F, L, D) for the whole file, in chunks with context on each side."""
        chunking = AudioChunking.of(self.config, chunk_seconds, context_seconds)
        wave = torch.from_numpy(waveform)[None]
        parts = []
        for start in range(0, num_frames, chunking.frames):
            stop, lo, hi, s0, s1 = chunking.span(start, num_frames, waveform.size)
            feats = self.components.encode_audio(wave[:, s0:s1], hi - lo)
            parts.append(feats[:, start - lo: stop - lo])
        return torch.cat(parts, dim=1)

    def window_tokens(self, features: torch.Tensor, speeds: torch.Tensor,
                      start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio and speed tokens of frames start..start+f, exactly as if computed over the whole
        file (edges replicated; frames past the end repeat the last one)."""
        f, total = self.config.num_frames, features.shape[1]
        m_a, m_s = self.config.audio.context_frames, self.config.speed.context_frames
        audio_idx = torch.arange(start - m_a, start + f + m_a).clamp(0, total - 1)
        speed_idx = torch.arange(start - m_s, start + f + m_s).clamp(0, total - 1)
        audio = self.components.project_audio(features[:, audio_idx])[:, m_a: m_a + f]
        speed = self.components.encode_speed(speeds[:, speed_idx])[:, m_s: m_s + f]
        return audio, speed

    # ---- step 2: reference ------------------------------------------------------------------
    def prepare(self, reference: Reference) -> dict[str, object]:
        """VAE latents, ReferenceNet features and FaceLocator output of the reference, computed once
        per identity (`self.reference_cache`)."""
        return self.reference_cache.fetch(reference, self.components, lambda: self.compute_reference(reference))

    def compute_reference(self, reference: Reference) -> dict[str, object]:
        pixels = torch.from_numpy(reference.pixels).permute(2, 0, 1)[None].float() / 127.5 - 1
        latents = self.components.encode_images(pixels)  # (1, C, h, w)
        mask = torch.from_numpy(reference.mask)[None]  # (1, 1, R, R); components move it to their device
        return {"latents": latents,
                "features": self.components.reference_features(latents),
                "face_latents": self.components.locate_face(mask)}

    # ---- step 3: windows --------------------------------------------------------------------
    def __call__(self, reference: Reference, waveform: np.ndarray, settings: RenderSettings = RenderSettings(),
                 progress=None, timer: StageTimer | None = None) -> Iterator[np.ndarray]:
        """Yield uint8 frames (k, R, R, 3) window by window; the total is the audio's frame count.
        With `settings.overlap` the denoising runs one window ahead in a worker thread
        (emo_rt.runtime.overlap); the frames are the same. `progress` is advanced per step and per
        window; `timer` (sequential runs) adds up the denoise and decode seconds."""
        produce = functools.partial(self.denoised_windows, reference, waveform, settings, progress)  # (cancelled)
        yield from self._decoded(produce, settings, progress, timer)

    def stream(self, reference: Reference, audio_chunks: Iterable[np.ndarray],
               settings: RenderSettings = RenderSettings(), sample_rate: int | None = None,
               progress=None, timer: StageTimer | None = None) -> Iterator[np.ndarray]:
        """Frames (k, R, R, 3) window by window while the audio arrives: `audio_chunks` yields float32
        pieces of any length, (n,) or (n, C) (channels averaged), at `sample_rate` (default: the
        model's, 16 kHz; others are resampled on the fly) and ends with the audio. Each chunk of
        `settings.audio_chunk_seconds` is encoded once its audio plus 1 s after it is in, and a window
        is denoised once its frames and their +/- m context frames have features, so the frames equal
        `self(reference, whole_waveform, settings)` exactly. A window waits for about
        chunk + 1 s of audio beyond its start: stream with a small `audio_chunk_seconds` (1-2 s)."""
        device = getattr(self.components, "device", torch.device("cpu"))
        audio = StreamedAudio(self, audio_chunks, settings, device, sample_rate)
        produce = functools.partial(self.window_latents, reference, audio, settings, progress)  # (cancelled)
        yield from self._decoded(produce, settings, progress, timer)

    def _decoded(self, produce: Callable[..., Iterator[torch.Tensor]], settings: RenderSettings, progress,
                 timer: StageTimer | None) -> Iterator[np.ndarray]:
        """The decoded frames of `produce(cancelled)`'s latents: one after the other, or with the
        denoising one window ahead in a worker thread (`settings.overlap`)."""
        timer = timer or StageTimer()
        if not settings.overlap:
            windows = produce()
            while True:
                with timer.stage("denoise"):  # audio features and the reference included
                    latents = next(windows, None)
                if latents is None:
                    return
                with timer.stage("decode"):
                    frames = self.decode_window(latents, progress)
                yield frames
        device = getattr(self.components, "device", torch.device("cpu"))
        with Overlapped(produce, depth=1, device=device) as windows:
            for latents in windows:
                yield self.decode_window(latents, progress)

    def denoised_windows(self, reference: Reference, waveform: np.ndarray, settings: RenderSettings,
                         progress=None, cancelled=lambda: False) -> Iterator[torch.Tensor]:
        """Steps 1-3a of a whole file: the final latents (k, C, h, w) of each window's k kept frames,
        in order. Stops early when `cancelled()` turns true (checked every denoising step)."""
        device = getattr(self.components, "device", torch.device("cpu"))
        yield from self.window_latents(reference, WholeAudio(self, waveform, settings, device), settings,
                                       progress, cancelled)

    def window_latents(self, reference: Reference, audio: WholeAudio | StreamedAudio, settings: RenderSettings,
                       progress=None, cancelled: Callable[[], bool] = lambda: False) -> Iterator[torch.Tensor]:
        """The window loop of every render: the final latents (k, C, h, w) of each window's k kept
        frames, in order. `audio.frames` gives a window the features of its frames and their +/- m
        context frames (blocking until a stream's audio holds them); the loop ends after the window
        that holds the file's last frame, or when `cancelled()` turns true (checked every step)."""
        config, comp = self.config, self.components
        f, n, h, c = config.num_frames, config.num_motion_frames, config.latent_size, config.vae.latent_channels
        m = max(config.audio.context_frames, config.speed.context_frames)
        ref = self.prepare(reference)
        guided = settings.cfg != 1.0
        scheduler = make_scheduler(settings.scheduler, self.schedule)
        generator = torch.Generator().manual_seed(settings.seed)  # on CPU: same noise on every device
        device = getattr(comp, "device", torch.device("cpu"))
        motion_latents = torch.zeros(1, c, n, h, h, device=device)  # first window: zero maps
        ref_features, face_latents = ref["features"], ref["face_latents"]
        null_ref = null_reference_features(ref_features) if guided else None
        if guided and settings.batch_guidance:  # (conditional, unconditional) as one batch, built once
            pair_ref = [torch.cat([x, z]) for x, z in zip(ref_features, null_ref)]
            pair_face = face_latents.expand(2, -1, -1, -1)
        anchor = None if config.anchor == "none" else ref["latents"].to(device)  # (1, C, h, w): the reference
        for k in itertools.count():
            start = k * f
            span = audio.frames(max(0, start - m), start + f + m, cancelled)
            if span is None or (span.total is not None and start >= span.total):  # cancelled, or past the end
                return
            audio_tokens, speed = self.window_tokens(span.features, span.speeds, start - span.first)
            motion = comp.motion_features(motion_latents.permute(0, 2, 1, 3, 4))
            anchored = () if anchor is None else (anchor,)
            # conditioning in the order of Components.denoise after (latents, timestep)
            cond = (ref_features, motion, audio_tokens, speed, face_latents, *anchored)
            uncond = (null_ref, motion, null_audio_tokens(audio_tokens), speed, face_latents,
                      *anchored) if guided else None
            if guided and settings.batch_guidance:
                cond = (pair_ref, [x.expand(2, *x.shape[1:]) for x in motion], torch.cat([audio_tokens, uncond[2]]),
                        speed.expand(2, -1, -1, -1), pair_face, *(a.expand(2, -1, -1, -1) for a in anchored))
                uncond = None
            scheduler.set_timesteps(settings.steps)
            start_latents = None
            if settings.start == "reference":  # the reference frame, as what is diffused
                start_latents = to_diffused(ref["latents"].to(device)[:, :, None], anchor, config.anchor)[:, :, 0]
            z = first_latents(scheduler, torch.randn(1, c, f, h, h, generator=generator).to(device), start_latents)
            for t in scheduler.timesteps:
                if cancelled():
                    return
                pred = self.predict(scheduler.scale_model_input(z, t), t, cond, uncond, settings.cfg)
                z = scheduler.step(pred, t, z, generator=generator).prev_sample
                if progress is not None:
                    progress.advance_step()
            z = from_diffused(z, anchor, config.anchor)  # the window's frame latents
            motion_latents = torch.cat([motion_latents, z], dim=2)[:, :, -n:] if n else motion_latents
            keep = f if span.total is None else min(f, span.total - start)  # the last window is padded, then trimmed
            yield z[0].permute(1, 0, 2, 3)[:keep].contiguous()  # its own memory: the worker moves on

    def predict(self, z_in: torch.Tensor, t: torch.Tensor, cond: tuple, uncond: tuple | None,
                cfg: float) -> torch.Tensor:
        """The guided noise prediction (1, C, f, h, w). `cond` holding a batch of 2 (the pair) is
        one Backbone pass; with `uncond` given, the two halves are two passes."""
        batch = cond[0][0].shape[0]  # of the reference features
        pred = self.components.denoise(z_in.expand(batch, -1, -1, -1, -1), t.reshape(1).expand(batch), *cond).float()
        if uncond is not None:
            pred_uncond = self.components.denoise(z_in, t.reshape(1), *uncond).float()
            return pred_uncond + cfg * (pred - pred_uncond)
        if batch == 2:
            return pred[1:] + cfg * (pred[:1] - pred[1:])
        return pred

    def decode_window(self, latents: torch.Tensor, progress=None) -> np.ndarray:
        """Step 3b: (k, C, h, w) final latents -> uint8 frames (k, R, R, 3)."""
        images = self.components.decode_latents(latents).float()
        frames = ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        if progress is not None:
            progress.advance_window(len(latents))
        return frames.cpu().numpy()


def first_latents(scheduler, noise: torch.Tensor, reference_latents: torch.Tensor | None) -> torch.Tensor:
    """A window's starting latents (1, C, f, h, w): pure noise, or the reference latents (1, C, h, w)
    noised to the schedule's first timestep. The training schedule (scaled_linear, 1000 steps) leaves
    signal at that timestep (sqrt(alpha_bar) 0.135 at t = 875, the first of 8 "leading" steps), which
    the model learned to expect; pure noise has none of it."""
    if reference_latents is None:
        return noise * scheduler.init_noise_sigma
    clean = reference_latents.to(noise)[:, :, None].expand_as(noise)
    return scheduler.add_noise(clean, noise, scheduler.timesteps[:1])


@dataclass(frozen=True)
class Inputs:
    reference: Reference
    waveform: np.ndarray  # (S,) mono 16 kHz: what the model hears
    native_audio: np.ndarray  # (S', C) at the file's own rate and channels: what the mp4 carries
    native_rate: int
    input_backend: str = "fallback"  # what read the files: "dali" (emo_rt.io.dali's pipelines) or "fallback"


def preload_input_readers() -> None:
    """Import now what `load_inputs` reads files with: DALI (unless $EMO_RT_NO_DALI) and mediapipe's
    face detection module. On the 2-core box these imports take about 1.9 s (DALI 1.1 s, mediapipe
    0.8 s), a cost of the process, not of a render: callers that load a model to render with (the
    CLI, the server) pay it at start-up, so a render's time is the render's."""
    from emo_rt.io.dali import backend_choice, import_dali

    if backend_choice() == "auto":
        import_dali()
    try:  # the module only: a detector graph is built when a face is to be found (a live one at an
        import mediapipe.python.solutions.face_detection  # noqa: F401  interrupt can abort the exit)
    except ImportError:
        pass


def load_inputs(image_path: str | Path, audio_path: str | Path, resolution: int, fps: int,
                face_box: str | None = None, no_crop: bool = False, sample_rate: int = 16000) -> Inputs:
    """Read and check the user's files (one clear InputError for anything unusable).

    Through the DALI input pipelines when DALI is importable and $EMO_RT_NO_DALI is not set, else
    soundfile/PyAV/Pillow; `Inputs.input_backend` says which. Both give the same audio (the track to
    mux and the 16 kHz waveform) and the same face crop; the reference pixels within one level
    (DALI resizes in float and rounds once, Pillow after each pass; tests/pipeline/test_load_inputs_dali.py).
    """
    from emo_rt.io.audio import check_duration
    from emo_rt.io.dali import InputPipelines, backend_choice
    from emo_rt.io.image import parse_face_box

    # host pipelines: the muxer and `Reference` keep numpy arrays, so a GPU decode would only come back
    pipes = InputPipelines(backend_choice(), device="cpu")
    native, rate = pipes.decode_audio(audio_path)  # (S', C)
    check_duration(native.shape[0], rate, 1 / fps, audio_path)
    if not np.isfinite(native).all():
        raise InputError(f"audio file contains NaN or infinite samples: {audio_path}")
    if is_silent(native):
        warnings.warn("the audio is silent: the face will stay still-ish", stacklevel=2)
    box: FaceBox | None = parse_face_box(face_box) if face_box else None
    image = load_image(image_path)  # (H, W, 3) uint8: validated, and what the face detectors see
    reference = prepare_reference(image, resolution, face_box=box, no_crop=no_crop,
                                  resize=lambda crop: pipes.reference_pixels(image_path, image, resolution, crop))
    if native.shape[1] > 2:  # AAC in mp4 here: mono or stereo
        warnings.warn(f"{audio_path} has {native.shape[1]} channels: the video carries them mixed to stereo",
                      stacklevel=2)
        native = np.stack([native[:, 0::2].mean(1), native[:, 1::2].mean(1)], 1).astype(np.float32)
    mono = native.mean(axis=1, dtype=np.float32)  # (S',)
    return Inputs(reference, pipes.resample(mono, rate, sample_rate), native, rate, pipes.backend)


def write_video(pipeline: EmoPipeline, inputs: Inputs, settings: RenderSettings, out_path: str | Path,
                progress=None, timer: StageTimer | None = None, on_frames=None) -> int:
    """The window loop into an H.264 + AAC mp4 with the input's audio (temporary file, renamed when
    complete); returns the frame count. `on_frames(first_index, frames)` sees each window's frames;
    `timer` adds the encode seconds (closing the file included) to the loop's own."""
    config = pipeline.config
    timer = timer or StageTimer()
    written = 0
    with VideoWriter(out_path, config.fps, config.resolution, inputs.native_audio, inputs.native_rate) as video:
        for frames in pipeline(inputs.reference, inputs.waveform, settings, progress=progress, timer=timer):
            if on_frames is not None:
                on_frames(written, frames)
            with timer.stage("encode"):
                video.write(frames)
            written += len(frames)
        with timer.stage("encode"):
            video.close()
    return written


def render(image_path: str | Path, audio_path: str | Path, out_path: str | Path,
           pipeline: EmoPipeline, settings: RenderSettings = RenderSettings(),
           face_box: str | None = None, no_crop: bool = False, preview: str | Path | None = None,
           show_progress: bool = True) -> RenderStats:
    """Render `out_path` (H.264 + AAC mp4, written to a temporary file and renamed at the end)."""
    from emo_rt.io.files import check_output_path
    from emo_rt.runtime.progress import RenderProgress

    config = pipeline.config
    check_output_path(out_path, "output video")  # before any heavy work
    started = time.perf_counter()
    inputs = load_inputs(image_path, audio_path, config.resolution, config.fps, face_box, no_crop,
                         config.audio.sample_rate)
    total = num_video_frames(inputs.waveform.size, config.audio.sample_rate, config.fps)
    picks = set(preview_indices(total, 12)) if preview else set()
    sheet: list[np.ndarray] = []

    first_frames_at: list[float] = []

    def on_frames(first: int, frames: np.ndarray) -> None:  # only the sheet's frames stay in memory
        if not first_frames_at:
            first_frames_at.append(time.perf_counter() - started)
        sheet.extend(frames[i - first] for i in range(first, first + len(frames)) if i in picks)

    with RenderProgress(total, settings.steps, enabled=show_progress) as bar:
        frames = write_video(pipeline, inputs, settings, out_path, progress=bar, on_frames=on_frames)
    stats = RenderStats(frames, frames / config.fps, time.perf_counter() - started, inputs.input_backend,
                        first_frames_at[0] if first_frames_at else None)
    if preview:  # the model's input crop first, then the picked frames with their times
        labels = ["reference"] + [f"{i / config.fps:.2f} s" for i in sorted(picks)]
        contact_sheet([inputs.reference.pixels, *sheet], preview, columns=7, frame_labels=labels,
                      label=f"{Path(image_path).name} + {Path(audio_path).name}")
    return stats


def with_overrides(settings: RenderSettings, **overrides) -> RenderSettings:
    """`settings` with the overrides that are not None (a command line's given flags)."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
