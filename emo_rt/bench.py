"""`emo-rt bench`: per-component latency, end-to-end frames/s and real-time factor per backend and
speed lever, stage overlap, and utilisation of the step network against this machine's measured
matmul peak. Entry point: `run_bench(model_dir, BenchOptions(...), out_dir) -> dict`, which writes
bench.json and bench.png to `out_dir`; `format_table(result)` is what the command prints.

Every end-to-end figure is one render of the same synthetic portrait (face box given: no detection)
and audio, timed from audio features to the closed mp4 (model loading and input decoding excluded).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from emo_rt.errors import EmoError, WeightsError
from emo_rt.eval import metrics
from emo_rt.io.files import write_json_atomic
from emo_rt.io.image import FaceBox, prepare_reference
from emo_rt.io.video import VideoWriter
from emo_rt.pipeline import (
    RENDER_FILE,
    EmoPipeline,
    Inputs,
    RenderSettings,
    StageTimer,
    model_render_settings,
    write_video,
)
from emo_rt.runtime.backends import load_components
from emo_rt.runtime.components import Components, TorchComponents
from emo_rt.runtime.machine import machine
from emo_rt.runtime.overlap import overlap_pays
from emo_rt.schedulers import noise_schedule

TARGET_FPS = 25.0  # real time at the presets' frame rate


@dataclass(frozen=True)
class BenchOptions:
    seconds: float = 2.0  # audio length of each end-to-end render
    steps: int = 4  # denoising steps of the end-to-end renders
    cfg: float = 3.5
    repeats: int = 3  # timed calls per component (median), after one warm-up call
    rounds: int = 2  # interleaved rounds of the end-to-end renders (each row: its fastest round)
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    quick: bool = False  # CI: fewer levers, no engine build
    backends: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
    engines: str | None = None  # onnxruntime fp32 engine directory; built in a temp dir otherwise (not --quick)


QUICK = BenchOptions(seconds=1.0, steps=2, repeats=2, rounds=1, quick=True)


def bench_options(quick: bool = False, **overrides) -> BenchOptions:
    """QUICK or the defaults, with the overrides that are not None."""
    return replace(QUICK if quick else BenchOptions(), **{k: v for k, v in overrides.items() if v is not None})


# ---- measuring --------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds per call of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def matmul_peak(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one (size x size) @ (size x size) matmul on this machine, now (best of `repeats`)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = min(_time_once(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _time_once(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """CPU SDPA (flash_attention_for_cpu) has no formula in torch's counter: QK^T and PV."""
    *batch, s_q, d = query
    return 2 * math.prod(batch) * s_q * key[-2] * (d + value[-1])


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call (matmuls, convolutions, attention), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def video_psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    """PSNR (dB) of a whole video (N, R, R, 3) against another: one MSE over every pixel of every frame."""
    n, r, _, c = frames.shape
    return float(metrics.psnr(frames.reshape(1, n * r, r, c), reference.reshape(1, n * r, r, c), cap_db=200.0)[0])


# ---- inputs ------------------------------------------------------------------------------------------
def synthetic_media(resolution: int, seconds: float, sample_rate: int = 16000) -> Inputs:
    """A smooth portrait-sized image with the face box given, and speech-like audio (3 Hz syllables)."""
    y, x = np.mgrid[:resolution, :resolution] / resolution
    image = (np.stack([0.3 + 0.4 * x, 0.4 + 0.2 * y, 0.6 - 0.3 * x], -1) * 255).astype(np.uint8)
    box = FaceBox(resolution // 4, resolution // 5, resolution // 2, resolution * 3 // 5)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.3 * (np.sin(2 * np.pi * 3 * t) > 0) * np.sin(2 * np.pi * 180 * t)
    wave = wave.astype(np.float32)
    return Inputs(prepare_reference(image, resolution, face_box=box), wave, wave, sample_rate)


class ComponentProbe:
    """Fixed inputs for each stage of one `Components` backend, so every backend (and the
    pytest-benchmark suite in benchmarks/) times the same calls. Shapes: one window of the config."""

    def __init__(self, components: Components, seed: int = 0):
        config = components.config
        self.components, self.config = components, config
        f, n, h, r = config.num_frames, config.num_motion_frames, config.latent_size, config.resolution
        g = torch.Generator().manual_seed(seed)
        self.waveform = torch.randn(1, config.audio.sample_rate, generator=g) * 0.1  # 1 s of audio
        c = config.vae.latent_channels
        self.latents = torch.randn(1, c, h, h, generator=g)
        self.motion_latents = torch.randn(1, n, c, h, h, generator=g)
        self.window_latents = torch.randn(f, c, h, h, generator=g)
        self.noisy = torch.randn(1, c, f, h, h, generator=g)
        self.timestep = torch.tensor([500])
        reference = components.reference_features(self.latents)
        motion = components.motion_features(self.motion_latents)
        face = components.locate_face(torch.zeros(1, 1, r, r))
        m_a, m_s = config.audio.context_frames, config.speed.context_frames
        features = components.encode_audio(self.waveform, config.fps)[:, : f + 2 * m_a]
        audio = components.project_audio(features)[:, m_a: m_a + f]
        speed = components.encode_speed(torch.ones(1, f + 2 * m_s))[:, m_s: m_s + f]
        anchor = (self.latents,) if config.anchor != "none" else ()  # (1, C, h, w) when the model takes one
        self.conditioning = {1: (reference, motion, audio, speed, face, *anchor),
                             2: ([torch.cat([x, x]) for x in reference], [x.expand(2, *x.shape[1:]) for x in motion],
                                 torch.cat([audio, audio]), speed.expand(2, -1, -1, -1), face.expand(2, -1, -1, -1),
                                 *(a.expand(2, -1, -1, -1) for a in anchor))}
        self.frames = np.random.default_rng(seed).integers(0, 256, (f, r, r, 3), dtype=np.uint8)

    def audio_encoder(self):  # 1 s of audio
        return self.components.encode_audio(self.waveform, self.config.fps)

    def reference_net(self):  # once per identity
        return self.components.reference_features(self.latents)

    def motion(self):  # once per window
        return self.components.motion_features(self.motion_latents)

    def step(self, batch: int = 1):  # steps (x2 with guidance as two passes) per window
        z = self.noisy.expand(batch, -1, -1, -1, -1)
        return self.components.denoise(z, self.timestep.expand(batch), *self.conditioning[batch])

    def vae_decode(self):  # once per window, f frames
        return self.components.decode_latents(self.window_latents)

    def video_encode(self, directory: str | Path, windows: int = 4) -> float:
        """Seconds per window of f frames: `windows` windows into an mp4 (with audio), closed."""
        seconds = windows * self.config.num_frames / self.config.fps
        audio = np.zeros(int(seconds * 16000), np.float32)
        started = time.perf_counter()
        with VideoWriter(Path(directory) / "encode.mp4", self.config.fps, self.config.resolution, audio, 16000) as video:
            for _ in range(windows):
                video.write(self.frames)
        return (time.perf_counter() - started) / windows


def component_latency(probe: ComponentProbe, repeats: int, scratch: Path) -> dict[str, float]:
    """Median milliseconds per call of each stage."""
    ms = {"audio_encoder_1s": timed(probe.audio_encoder, repeats),
          "reference_net": timed(probe.reference_net, repeats),
          "motion_features": timed(probe.motion, repeats),
          "step_batch1": timed(lambda: probe.step(1), repeats),
          "step_batch2": timed(lambda: probe.step(2), repeats),
          "vae_decode_window": timed(probe.vae_decode, repeats),
          "video_encode_window": statistics.median(probe.video_encode(scratch) for _ in range(max(1, repeats - 1)))}
    return {k: 1e3 * v for k, v in ms.items()}


# ---- end-to-end renders --------------------------------------------------------------------------------
def timed_render(pipeline: EmoPipeline, media: Inputs, settings: RenderSettings, out_path: Path) -> dict:
    """One render into an mp4 (`write_video`, the render loop): frames, wall and CPU seconds, and with
    overlap off the time of each stage (denoise includes audio features and the reference, encode
    includes closing the file)."""
    chunks: list[np.ndarray] = []
    timer = StageTimer()
    started, cpu_started = time.perf_counter(), time.process_time()
    write_video(pipeline, media, settings, out_path, timer=timer, on_frames=lambda first, frames: chunks.append(frames))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    frames = np.concatenate(chunks)
    # cores_used = CPU seconds of all our threads / wall seconds: what the machine gave this render
    row = {"frames": len(frames), "seconds": wall, "frames_per_second": len(frames) / wall,
           "real_time_factor": wall / (len(frames) / pipeline.config.fps), "cpu_seconds": cpu, "cores_used": cpu / wall}
    if not settings.overlap:
        row["stages"] = timer.seconds
    return {"row": row, "frames": frames}


@dataclass(frozen=True)
class Lever:
    name: str
    backend: str  # key into the components built for the run
    settings: RenderSettings
    comparable: bool  # the eager baseline's maths (maybe at another precision): PSNR is checked against it
    threads: int | None = None


def levers(options: BenchOptions, base: RenderSettings, backends: list[str], bf16: bool,
           model_default: RenderSettings | None = None) -> list[Lever]:
    eager = Lever("torch eager (sequential)", "torch", replace(base, overlap=False), True)
    rows = [eager, Lever("torch + overlap", "torch", base, True),
            Lever("guidance off (cfg 1)", "torch", replace(base, cfg=1.0, overlap=False), False)]
    if model_default is not None:  # what `emo-rt render` does with no flags (the model's render.json)
        rows.append(Lever(f"model default ({model_default.steps} steps, cfg {model_default.cfg:g})", "torch",
                          replace(model_default, seed=0, overlap=overlap_pays(torch.device("cpu"),
                                                                              torch.get_num_threads())), False))
    if not options.quick:
        rows += [Lever("guidance as two passes", "torch", replace(base, batch_guidance=False, overlap=False), True),
                 Lever(f"steps x2 ({2 * base.steps})", "torch", replace(base, steps=2 * base.steps, overlap=False), False)]
        if bf16:
            rows.append(Lever("bf16", "torch-bf16", replace(base, overlap=False), True))
    # eager at every thread count: the baseline is the fastest of them (torch's default is not always)
    rows += [Lever(eager_name(n), "torch", replace(base, overlap=False), True, threads=n)
             for n in range(1, (os.cpu_count() or 1) + 1) if n != torch.get_num_threads()]
    if "onnxruntime" in backends:
        rows += [Lever("onnxruntime (sequential)", "onnxruntime", replace(base, overlap=False), True),
                 Lever("onnxruntime + overlap", "onnxruntime", base, True)]
    if "onnxruntime-int8" in backends:
        rows += [Lever("onnxruntime int8 (sequential)", "onnxruntime-int8", replace(base, overlap=False), True),
                 Lever("onnxruntime int8 + overlap", "onnxruntime-int8", base, True)]
    if "openvino" in backends:  # all cores per call: sequential is its fastest form on 2 cores
        rows += [Lever("openvino (sequential)", "openvino", replace(base, overlap=False), True),
                 Lever("openvino + overlap", "openvino", base, True)]
    if "openvino-bf16" in backends:
        rows += [Lever("openvino bf16 (sequential)", "openvino-bf16", replace(base, overlap=False), True),
                 Lever("openvino bf16 + overlap", "openvino-bf16", base, True)]
    return rows


def eager_name(threads: int | None = None) -> str:
    """The eager baseline's row: at the run's torch threads (first row, the frames all are compared
    with), or at another thread count."""
    return "torch eager (sequential)" if threads is None else f"torch eager, {threads} thread{'s' * (threads > 1)}"


# ---- the run -----------------------------------------------------------------------------------------------
def bench_model_dir(weights: str | Path | None, preset: str | None, scratch: Path) -> Path:
    """--weights DIR, else a random-init --preset model written to `scratch`, else the default model."""
    if weights is not None:
        return Path(weights)
    if preset is not None:
        from emo_rt.config import PRESETS
        from emo_rt.models import EmoModel

        if preset not in PRESETS:
            raise EmoError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        torch.manual_seed(0)
        return EmoModel(PRESETS[preset]()).save_pretrained(scratch / f"random-{preset}")
    from emo_rt.pipeline import default_model_dir

    try:
        return default_model_dir()
    except WeightsError as err:
        raise WeightsError(f"{err}; or --preset tiny to benchmark a random-init tiny model") from None


def _loaded(backend: str, model_dir: Path, engines: tuple[Path | None, str], dtype: torch.dtype,
            **options) -> tuple[Components | None, str]:
    """`backend`'s components on the engine set `engines` (a directory, or None and why not), or None
    and why not."""
    directory, why = engines
    if directory is None:
        return None, why
    try:
        return load_components(backend, model_dir, directory, dtype, **options), ""
    except ImportError as err:
        return None, f"{backend} is not installed ({err}): pip install -e '.[export]'"
    except EmoError as err:
        return None, str(err)


def _kept(components: dict[str, Components], result: dict, key: str, loaded: tuple[Components | None, str]) -> bool:
    """Put `loaded` into `components` under `key`, or say in result["skipped"] why there is none."""
    backend, why = loaded
    if backend is None:
        result["skipped"][key.replace("-", " ")] = why
        return False
    components[key] = backend
    return True


def _engine_dir(model_dir: Path, options: BenchOptions, scratch: Path, precision: str) -> tuple[Path | None, str]:
    """--engines, or a temp dir, holding a current `precision` ONNX set (built where missing), or None
    and why not."""
    engines = options.engines
    if engines is None and options.quick:
        return None, "--quick builds no engines (pass --engines DIR from `emo-rt build-engines`)"
    if engines is not None and precision == "fp32":
        return Path(engines), ""
    try:  # build_engines reuses what is current
        from emo_rt.export import build_engines
    except ImportError as err:
        return None, f"the exporter is not installed ({err}): pip install -e '.[export]'"
    engines = Path(engines or scratch / "engines")
    try:
        build_engines(model_dir, "onnxruntime", precision, engines, progress=False)
    except (EmoError, ImportError) as err:
        return None, str(err)
    return engines, ""


def run_bench(model_dir: str | Path, options: BenchOptions = BenchOptions(), out_dir: str | Path = "bench",
              progress: Callable[[str], None] = lambda message: None) -> dict:
    """Measure everything (see the module docstring); write bench.json and bench.png to `out_dir`."""
    from emo_rt.models import EmoModel

    if options.threads:
        torch.set_num_threads(options.threads)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="emo-rt-bench-") as scratch_name:
        scratch = Path(scratch_name)
        result: dict = {"machine": machine(), "load_average_start": os.getloadavg(), "model_dir": str(model_dir),
                        "options": asdict(options), "skipped": {}, "peak": {}}
        model = EmoModel.from_pretrained(model_dir)
        config = model.config
        result["model"] = {"resolution": config.resolution, "num_frames": config.num_frames,
                           "num_motion_frames": config.num_motion_frames, "fps": config.fps,
                           "parameters_millions": sum(p.numel() for p in model.parameters()) / 1e6}
        progress("matmul peak")
        peak_start = matmul_peak(torch.float32)  # measured again at the end: other jobs come and go
        components = _backends(model_dir, model, options, scratch, result, progress)
        backends = [name for name in ("torch", "onnxruntime", "openvino") if name in components]
        # 1. per-component latency, per backend; 2. FLOPs (the model's, whatever runs it)
        probes = {}
        result["components_ms"] = {}
        for name in backends:
            progress(f"component latency ({name})")
            probes[name] = ComponentProbe(components[name])
            result["components_ms"][name] = component_latency(probes[name], options.repeats, scratch)
        flops = _flops(probes["torch"], result)
        # 3. the reference cache; 4. end-to-end renders: eager, each lever, each backend, the model's default
        media = synthetic_media(config.resolution, options.seconds, config.audio.sample_rate)
        result["reference_cache_ms"] = _reference_cache_ms(components["torch"], model_dir, media, scratch)
        base = RenderSettings(steps=options.steps, cfg=options.cfg, seed=0)
        recorded = (model_dir / RENDER_FILE).is_file()
        if not recorded:
            result["skipped"]["model default"] = f"{model_dir} has no {RENDER_FILE} (render settings of its own)"
        default = model_render_settings(model_dir) if recorded else None
        chosen = levers(options, base, [name for name in components if name != "torch-bf16"],
                        "torch-bf16" in components, default)
        result["renders"] = render_levers(chosen, components, model_dir, media, options.rounds, scratch, progress)
        # 5. utilisation: counted FLOPs over measured time, against the better of the two peak measurements
        peak = max(peak_start, matmul_peak(torch.float32))
        result["peak"].update(fp32_matmul_2048_gflops=peak / 1e9, fp32_matmul_2048_gflops_start=peak_start / 1e9)
        result["utilisation"] = {
            name: {k: flops[k] / (result["components_ms"][name][k] / 1e3) / peak
                   for k in ("step_batch1", "step_batch2", "vae_decode_window")}
            for name in backends}
        result["summary"] = summarise(result, options)
        result["load_average_end"] = os.getloadavg()
    out_dir.mkdir(parents=True, exist_ok=True)  # made only now: an error or a signal before leaves no folder
    write_json_atomic(out_dir / "bench.json", result, indent=2, default=str, allow_nan=False)
    plot(result, out_dir / "bench.png")
    return result


def _backends(model_dir: Path, model, options: BenchOptions, scratch: Path, result: dict,
              progress: Callable[[str], None]) -> dict[str, Components]:
    """torch, plus torch-bf16 where this CPU has native bf16 (not --quick), and onnxruntime (fp32,
    int8) and openvino (fp32, bf16) where their engines exist or can be built; what is skipped is said
    in result["skipped"]."""
    components: dict[str, Components] = {"torch": TorchComponents(model)}
    if not options.quick:
        bf16 = _bf16(model_dir, result)
        if bf16 is not None:
            components["torch-bf16"] = bf16
    if {"onnxruntime", "openvino"} & set(options.backends):
        progress("ONNX engines")
        fp32 = _engine_dir(model_dir, options, scratch, "fp32")  # what both run
    threads = torch.get_num_threads()
    if "onnxruntime" in options.backends:
        if _kept(components, result, "onnxruntime", _loaded("onnxruntime", model_dir, fp32, torch.float32,
                                                            threads=threads)):
            result["machine"]["onnxruntime"] = components["onnxruntime"].name
        if not options.quick:  # the VAE decoder in int8 (VNNI), the rest as above
            progress("onnxruntime int8 engines")
            int8 = _engine_dir(model_dir, options, scratch, "int8")
            _kept(components, result, "onnxruntime-int8",
                  _loaded("onnxruntime", model_dir, int8, torch.int8, threads=threads))
    if "openvino" in options.backends:  # all cores per call; bf16 where the CPU has it natively
        progress("openvino")
        if _kept(components, result, "openvino", _loaded("openvino", model_dir, fp32, torch.float32)):
            result["machine"]["openvino"] = components["openvino"].name
            _kept(components, result, "openvino-bf16", _loaded("openvino", model_dir, fp32, torch.bfloat16))
    return components


def _flops(probe: ComponentProbe, result: dict) -> dict[str, int]:
    flops = {"step_batch1": count_flops(lambda: probe.step(1)), "step_batch2": count_flops(lambda: probe.step(2)),
             "vae_decode_window": count_flops(probe.vae_decode), "motion_features": count_flops(probe.motion)}
    f = probe.config.num_frames
    result["flops"] = {"step_per_frame_gflop": flops["step_batch1"] / f / 1e9,
                       "vae_decode_per_frame_gflop": flops["vae_decode_window"] / f / 1e9,
                       "motion_per_frame_gflop": flops["motion_features"] / f / 1e9,
                       **{f"{k}_gflop": v / 1e9 for k, v in flops.items()}}
    return flops


def _reference_cache_ms(components: Components, model_dir: Path, media: Inputs, scratch: Path) -> dict:
    """The reference state computed (VAE + ReferenceNet + FaceLocator) vs read from the disk cache."""
    from emo_rt.runtime.reference_cache import ReferenceCache, weights_key

    cache_dir = scratch / "reference-cache"
    pipe = EmoPipeline(components, noise_schedule(model_dir), ReferenceCache(cache_dir, weights_key(model_dir)))
    computed = _time_once(lambda: pipe.prepare(media.reference))
    fresh = EmoPipeline(components, noise_schedule(model_dir), ReferenceCache(cache_dir, weights_key(model_dir)))
    from_disk = _time_once(lambda: fresh.prepare(media.reference))
    return {"computed": 1e3 * computed, "disk_hit": 1e3 * from_disk,
            "memory_hit": 1e3 * _time_once(lambda: fresh.prepare(media.reference))}


def _bf16(model_dir: Path, result: dict) -> TorchComponents | None:
    """bf16 components where this CPU multiplies bf16 faster than fp32 (measured); else None, with
    the measurement that says why in result["skipped"]."""
    from emo_rt.models import EmoModel

    fp32_512, bf16_512 = matmul_peak(torch.float32, 512), matmul_peak(torch.bfloat16, 512)
    result["peak"].update(fp32_matmul_512_gflops=fp32_512 / 1e9, bf16_matmul_512_gflops=bf16_512 / 1e9)
    bf16 = TorchComponents(EmoModel.from_pretrained(model_dir, dtype=torch.bfloat16), torch.bfloat16)
    probe = ComponentProbe(bf16)
    result["bf16_step_batch1_ms"] = 1e3 * timed(lambda: probe.step(1), 1, warmup=0)
    if bf16_512 > fp32_512:
        return bf16
    result["skipped"]["bf16 render"] = (
        f"bf16 matmuls run at {bf16_512 / 1e9:.2f} GFLOP/s here vs {fp32_512 / 1e9:.1f} fp32 (512^3): no "
        f"native bf16 on this CPU; one bf16 step took {result['bf16_step_batch1_ms']:.0f} ms")
    return None


def render_levers(chosen: list[Lever], components: dict[str, Components], model_dir: Path, media: Inputs,
                  rounds: int, scratch: Path, progress: Callable[[str], None]) -> list[dict]:
    """One row per lever: `rounds` interleaved rounds, each row its fastest round (the least
    disturbed by other jobs); PSNR against the first lever's (the eager baseline's) frames."""
    rows: dict[str, dict] = {}
    baseline_frames = None
    default_threads = torch.get_num_threads()
    for round_index in range(rounds):
        for lever in chosen:
            progress(f"render {round_index + 1}/{rounds}: {lever.name}")
            if lever.threads:
                torch.set_num_threads(lever.threads)
            try:
                pipeline = EmoPipeline(components[lever.backend], noise_schedule(model_dir))
                run = timed_render(pipeline, media, lever.settings, scratch / "render.mp4")
            finally:
                torch.set_num_threads(default_threads)
            if baseline_frames is None:
                baseline_frames = run["frames"]
            row = {"name": lever.name, "backend": lever.backend, "settings": asdict(lever.settings),
                   "threads": lever.threads or default_threads, **run["row"]}
            if lever.comparable:  # JSON has no infinity: identical frames are said so, with no PSNR
                row["identical_to_eager"] = bool(np.array_equal(run["frames"], baseline_frames))
                row["psnr_vs_eager_db"] = None if row["identical_to_eager"] else video_psnr(run["frames"], baseline_frames)
            previous = rows.get(lever.name)
            row["seconds_each_round"] = (previous["seconds_each_round"] if previous else []) + [row["seconds"]]
            if previous is None or row["seconds"] < previous["seconds"]:
                rows[lever.name] = row
            else:
                previous["seconds_each_round"] = row["seconds_each_round"]
    return list(rows.values())


def summarise(result: dict, options: BenchOptions) -> dict:
    """The ratios that answer the issue's questions, from this run's figures only."""
    rows = {r["name"]: r for r in result["renders"]}
    sequential = rows[eager_name()]  # at the run's threads, as the overlapped render
    stages = sequential["stages"]
    # the baseline: eager torch at its fastest thread count
    eager = max((r for r in result["renders"] if r["name"].startswith("torch eager")),
                key=lambda r: r["frames_per_second"])
    overlap = rows["torch + overlap"]
    same = [r for r in result["renders"] if r.get("identical_to_eager") or (r.get("psnr_vs_eager_db") or 0) >= 40]
    best = max(same, key=lambda r: r["frames_per_second"])
    default = next((r for r in result["renders"] if r["name"].startswith("model default")), None)
    return {
        "overlap": {"sum_of_stages_s": sum(stages.values()), "stages_s": stages,
                    "sequential_end_to_end_s": sequential["seconds"], "overlapped_end_to_end_s": overlap["seconds"],
                    "cores_used_sequential": sequential["cores_used"], "cores_used_overlapped": overlap["cores_used"],
                    "overlapped_over_sum_of_stages": overlap["seconds"] / sum(stages.values())},
        "eager_vs_optimised": {"eager": eager["name"], "optimised": best["name"],
                               "speedup": best["frames_per_second"] / eager["frames_per_second"],
                               # each round's pair, rendered seconds apart: less exposed to the box's drift
                               "speedup_by_round": [e / o for e, o in zip(eager["seconds_each_round"],
                                                                          best["seconds_each_round"])],
                               "identical": best.get("identical_to_eager"), "psnr_db": best.get("psnr_vs_eager_db")},
        "best_real_time_factor": min(r["real_time_factor"] for r in result["renders"]),
        # what `emo-rt render` does with no flags, end to end (model loading and input decoding excluded)
        "model_default": None if default is None else {
            "name": default["name"], "frames_per_second": default["frames_per_second"],
            "real_time_factor": default["real_time_factor"]},
        "target_fps": TARGET_FPS,
    }


# ---- output ---------------------------------------------------------------------------------------------
def format_table(result: dict) -> str:
    lines = [f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"{result['machine']['torch_threads']} torch threads; load average "
             f"{' '.join(f'{v:.1f}' for v in result['load_average_start'])} at start, "
             f"{' '.join(f'{v:.1f}' for v in result['load_average_end'])} at the end",
             f"model: {result['model_dir']} ({result['model']['parameters_millions']:.1f}M parameters, "
             f"{result['model']['resolution']} px, {result['model']['num_frames']} frames per window)", ""]
    backends = list(result["components_ms"])
    lines.append(f"{'component (ms per call)':26}" + "".join(f"{b:>14}" for b in backends))
    for key in result["components_ms"][backends[0]]:
        lines.append(f"{key:26}" + "".join(f"{result['components_ms'][b][key]:14.1f}" for b in backends))
    flops, peak = result["flops"], result["peak"]["fp32_matmul_2048_gflops"]
    lines += ["", f"step network: {flops['step_per_frame_gflop']:.3f} GFLOP per frame per pass; VAE decode "
                  f"{flops['vae_decode_per_frame_gflop']:.3f} GFLOP per frame; fp32 matmul peak {peak:.1f} GFLOP/s"]
    for b, u in result["utilisation"].items():
        lines.append(f"utilisation of the peak ({b}): " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in u.items()))
    if "bf16_step_batch1_ms" in result:
        pk = result["peak"]
        lines.append(f"bf16: one step (batch 1, cold) {result['bf16_step_batch1_ms']:.0f} ms vs fp32 "
                     f"{result['components_ms']['torch']['step_batch1']:.0f} ms; matmul 512^3 bf16 "
                     f"{pk['bf16_matmul_512_gflops']:.2f} vs fp32 {pk['fp32_matmul_512_gflops']:.1f} GFLOP/s")
    rc = result["reference_cache_ms"]
    lines += [f"reference: computed {rc['computed']:.1f} ms, disk cache hit {rc['disk_hit']:.1f} ms, "
              f"memory hit {rc['memory_hit']:.3f} ms", ""]
    rounds = result["options"]["rounds"]
    lines.append(f"{f'render (best of {rounds})':30}{'frames':>7}{'seconds':>9}{'CPU s':>8}{'cores':>7}"
                 f"{'frames/s':>10}{'RTF':>8}{'PSNR vs eager':>15}")
    for r in result["renders"]:
        p = r.get("psnr_vs_eager_db")
        shown = "identical" if r.get("identical_to_eager") else ("-" if p is None else f"{p:.1f} dB")
        lines.append(f"{r['name']:30}{r['frames']:7d}{r['seconds']:9.2f}{r['cpu_seconds']:8.1f}{r['cores_used']:7.2f}"
                     f"{r['frames_per_second']:10.2f}{r['real_time_factor']:8.2f}{shown:>15}")
    s = result["summary"]
    o = s["overlap"]
    lines += ["", f"overlap: stages measured separately sum to {o['sum_of_stages_s']:.2f} s "
                  f"(denoise {o['stages_s']['denoise']:.2f}, decode {o['stages_s']['decode']:.2f}, encode "
                  f"{o['stages_s']['encode']:.2f}); overlapped end to end {o['overlapped_end_to_end_s']:.2f} s "
                  f"({o['overlapped_over_sum_of_stages']:.2f}x the sum; cores used {o['cores_used_sequential']:.2f} "
                  f"sequential, {o['cores_used_overlapped']:.2f} overlapped)",
              f"eager vs optimised ({s['eager_vs_optimised']['optimised']} against "
              f"{s['eager_vs_optimised']['eager']}): {s['eager_vs_optimised']['speedup']:.2f}x frames/s (round by "
              f"round: {', '.join(f'{x:.2f}' for x in s['eager_vs_optimised']['speedup_by_round'])})",
              f"best real-time factor here {s['best_real_time_factor']:.2f} (target <= 1.0 = {TARGET_FPS:g} fps)"
              + ("" if s["model_default"] is None else
                 f"; the model's default render ({s['model_default']['name']}): "
                 f"{s['model_default']['frames_per_second']:.2f} frames/s, real-time factor "
                 f"{s['model_default']['real_time_factor']:.2f}")]
    for name, why in result["skipped"].items():
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    backends = list(result["components_ms"])
    keys = list(result["components_ms"][backends[0]])
    height = 0.8 / len(backends)
    for i, b in enumerate(backends):
        left.barh([k + i * height for k in range(len(keys))], [result["components_ms"][b][k] for k in keys],
                  height=height, label=b)
    left.set_yticks([k + 0.4 - height / 2 for k in range(len(keys))], keys)
    left.set_xscale("log")
    left.set_xlabel("ms per call (log)")
    left.set_title("component latency")
    left.legend()
    names = [r["name"] for r in result["renders"]]
    right.barh(names, [r["frames_per_second"] for r in result["renders"]], color="tab:green")
    right.axvline(TARGET_FPS, color="tab:red", linestyle="--", label=f"real time ({TARGET_FPS:g} fps)")
    right.set_xscale("log")
    right.set_xlabel("frames/s end to end (log)")
    right.set_title(f"renders ({result['options']['seconds']:g} s audio, {result['options']['steps']} steps, "
                    f"cfg {result['options']['cfg']:g})")
    right.invert_yaxis()
    right.legend()
    load = result["load_average_start"][0]
    fig.suptitle(f"emo-rt bench: {result['machine']['cpu']}, torch threads: {result['machine']['torch_threads']}, "
                 f"load average {load:.1f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
