"""The `emo-rt` command line: parses arguments and calls the API, nothing more.

Every command shares one error path (`main`): an `EmoError` is one `emo-rt: error: ...` line and
exit 2, Ctrl-C exit 130, SIGTERM exit 143; outputs are written under temporary names, so an error or
a signal leaves nothing half-written behind.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from emo_rt import arguments as a
from emo_rt.errors import EmoError


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt, so every cleanup runs."""


# ---- render ---------------------------------------------------------------------------------
def _render(args) -> int:
    _check_render_paths(args)  # before the imports: a mistyped path is told in 0.2 s, not 8
    from emo_rt.pipeline import EmoPipeline, preload_input_readers, render, with_overrides
    from emo_rt.runtime.overlap import overlap_pays
    from emo_rt.runtime.reference_cache import cache_dir_option

    torch = _torch(args.threads)
    if args.engines is not None and args.backend == "torch":
        raise EmoError("--engines is for --backend onnxruntime, openvino or tensorrt "
                       "(torch runs the weights themselves)")
    pipeline = EmoPipeline.from_pretrained(args.weights, dtype=args.dtype and getattr(torch, args.dtype),
                                           device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
                                           attention=args.attention, backend=args.backend, engine_dir=args.engines,
                                           reference_cache=cache_dir_option(args.reference_cache),
                                           cuda_graphs=args.cuda_graphs, threads=args.threads)
    if not args.quiet:
        print(f"backend: {pipeline.components.name}")  # onnxruntime: the providers its sessions really use
    if args.resolution is not None and args.resolution != pipeline.config.resolution:
        raise EmoError(f"--resolution {args.resolution}: these weights render at {pipeline.config.resolution}")
    if args.fps is not None and args.fps != pipeline.config.fps:
        raise EmoError(f"--fps {args.fps}: these weights were trained at {pipeline.config.fps} fps")
    device = getattr(pipeline.components, "device", "cpu")
    overlap = args.overlap or (not args.no_overlap and overlap_pays(device, torch.get_num_threads()))
    settings = with_overrides(pipeline.defaults, scheduler=args.scheduler, steps=args.steps, cfg=args.cfg,
                              start=args.start, seed=args.seed, speed=args.speed,
                              batch_guidance=not args.separate_guidance, overlap=overlap)
    if not args.quiet:
        print(f"settings: {settings.scheduler} {settings.steps} steps, cfg {settings.cfg:g}, start {settings.start}")
    preload_input_readers()  # imported before the render: its time is the render's
    stats = render(args.image, args.audio, args.output, pipeline, settings, face_box=args.face_box,
                   no_crop=args.no_crop, preview=args.preview, show_progress=not args.quiet)
    print(f"wrote {args.output}: {stats.line()} ({pipeline.components.name}; inputs: {stats.input_backend})")
    return 0


def _check_render_paths(args) -> None:
    """The files render reads and writes, checked before the model loads (render checks them again);
    the preview is written after the video, so an unwritable one would otherwise leave the video."""
    from emo_rt.io.files import check_input_file, check_output_path

    check_input_file(args.image, "image")
    check_input_file(args.audio, "audio")
    check_output_path(args.output, "output video")
    if args.preview is not None:
        check_output_path(args.preview, "preview")


def _check_output_dir(path: str, what: str) -> None:
    """An output folder (made by the command, or kept to resume) checked before any work."""
    from emo_rt.io.files import check_output_dir

    check_output_dir(path, what)


def _torch(threads: int | None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch


# ---- engines, models, data ------------------------------------------------------------------
def _build_engines(args) -> int:
    _check_output_dir(args.out, "--out")
    from emo_rt.export import build_engines
    from emo_rt.pipeline import default_model_dir

    weights = args.weights if args.weights is not None else default_model_dir()
    print(build_engines(weights, args.backend, args.precision, args.out, progress=not args.quiet).summary())
    return 0


def _new_model(args) -> int:
    from emo_rt.io.files import atomic_directory, check_new_directory

    check_new_directory(args.out, "model directory")  # before the model stack's imports
    from emo_rt.config import PRESETS
    from emo_rt.models import EmoModel

    _torch(None).manual_seed(args.seed)
    model = EmoModel(PRESETS[args.preset]())
    if args.sd15_unet:
        from emo_rt.models.weights import import_sd15_unet
        print(import_sd15_unet(model, args.sd15_unet).summary())
    if args.animatediff:
        from emo_rt.models.weights import import_animatediff
        print(import_animatediff(model, args.animatediff).summary())
    with atomic_directory(args.out) as partial:  # an error or a signal leaves no half-written model
        model.save_pretrained(partial)
    print(f"wrote {args.out} ({args.preset}, random init seed {args.seed} where not imported)")
    return 0


def _info(args) -> int:
    from emo_rt.config import PRESETS
    from emo_rt.models import EmoModel

    torch = _torch(None)
    print(f"{'preset':8} " + " ".join(f"{p:>15}" for p in EmoModel.PARTS) + f" {'total':>9}")
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            model = EmoModel(preset())
        counts = [sum(p.numel() for p in getattr(model, part).parameters()) for part in EmoModel.PARTS]
        print(f"{name:8} " + " ".join(f"{c / 1e6:14.2f}M" for c in counts) + f" {sum(counts) / 1e6:8.1f}M")
    return 0


def _synth_data(args) -> int:
    from emo_rt.training.data.synth import generate_corpus

    seconds = args.seconds[0] if len(args.seconds) == 1 else tuple(args.seconds)
    manifest = generate_corpus(Path(args.out), args.clips, args.seed, size=args.size, seconds=seconds,
                               workers=args.workers or os.cpu_count(), progress=not args.quiet)
    print(f"wrote {manifest}")
    return 0


def _preprocess(args) -> int:
    _check_output_dir(args.out, "output folder")
    from emo_rt.training.data.preprocess import preprocess

    report = preprocess(args.input, args.out, args.resolution, args.workers, require_audio=not args.no_audio,
                        progress=not args.quiet)
    print(report.summary())
    return 0


def _train(args) -> int:
    _check_output_dir(args.out, "--out")
    from emo_rt.training.trainer import train

    print(train(args.recipe, args.stage, args.data, args.out, args.resume, progress=not args.no_progress))
    return 0


# ---- measuring --------------------------------------------------------------------------------
def _eval(args) -> int:
    import time

    from emo_rt.eval import EvalSettings, run_eval
    from emo_rt.eval.report import table
    from emo_rt.pipeline import default_model_dir, model_render_settings, with_overrides

    _torch(args.threads)
    weights = args.weights if args.weights is not None else default_model_dir()
    render = with_overrides(model_render_settings(weights), scheduler=args.scheduler, steps=args.steps, cfg=args.cfg,
                            start=args.start, seed=args.seed)
    settings = EvalSettings(render=render, clips=args.clips, clip_seconds=args.clip_seconds,
                            split=args.split, reference_frame=args.reference_frame,
                            drift_seconds=args.drift_seconds, speeds=args.speeds, speed_seconds=args.speed_seconds,
                            seeds=args.seeds)
    started = time.perf_counter()
    report, paths = run_eval(args.data, args.corpus, args.out, weights, settings, backend=args.backend,
                             engines=args.engines, dtype=args.dtype, evaluator_dir=args.evaluator,
                             progress=not args.quiet)
    print(table(report))
    print(f"wrote {paths['json']}, {paths['md'].name}, {paths['png'].name} in {time.perf_counter() - started:.1f} s "
          f"({report['timings']['rendered_frames']} frames rendered in {report['timings']['render_seconds']:.1f} s)")
    return 0


def _bench(args) -> int:
    import json
    import tempfile

    _check_output_dir(args.out, "--out")
    from emo_rt.bench import bench_model_dir, bench_options, format_table, run_bench

    options = bench_options(args.quick, seconds=args.seconds, steps=args.steps, cfg=args.cfg, threads=args.threads,
                            rounds=args.rounds, backends=tuple(args.backend) if args.backend else None,
                            engines=args.engines)
    with tempfile.TemporaryDirectory(prefix="emo-rt-bench-model-") as scratch:
        model_dir = bench_model_dir(args.weights, args.preset, Path(scratch))
        say = (lambda message: None) if args.quiet else (lambda message: print(f"bench: {message}", file=sys.stderr))
        result = run_bench(model_dir, options, args.out, progress=say)
    print(format_table(result))
    if args.json:
        print(json.dumps(result, indent=2, default=str, allow_nan=False))
    print(f"wrote {Path(args.out) / 'bench.json'} and {Path(args.out) / 'bench.png'}")
    return 0


# ---- release steps ----------------------------------------------------------------------------
def _ship(args) -> int:
    from emo_rt.training.release.ship import ship

    print(f"wrote {ship(args.run_dir, args.out, args.max_mb, args.stage)}")
    return 0


def _model_card(args) -> int:
    from emo_rt.training.release.model_card import write_card

    print(f"wrote {write_card(args.model, args.report, args.corpus, args.notes, args.baseline, args.recipe)}")
    return 0


def _train_evaluator(args) -> int:
    if args.out is not None:
        _check_output_dir(args.out, "--out")
    from emo_rt.training.release.train_evaluator import run

    _torch(args.threads)
    result = run(args.data, args.corpus, args.out, args.steps, args.batch, args.lr, args.seed,
                 figures_only=args.figures_only, progress=not args.quiet, part=args.part,
                 identity_data=args.identity_data or [], identity_steps=args.identity_steps)
    auc = (result.get("identity_figures") or {}).get("test", {}).get("auc")
    print(f"wrote {args.out or 'the shipped evaluator'}: test mouth_open r {result['test']['mouth_open']['r']:.3f}"
          + (f", identity ROC AUC {auc:.4f}" if auc is not None else ""))
    return 0


# ---- serving ----------------------------------------------------------------------------------
def _serve(args) -> int:
    from emo_rt.serve import Limits, ServeOptions, serve

    _torch(args.threads)
    if args.engines is not None and args.backend == "torch":
        raise EmoError("--engines is for --backend onnxruntime or openvino (torch runs the weights themselves)")
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_audio_seconds=args.max_seconds)
    serve(ServeOptions(host=args.host, port=args.port, weights=args.weights, portraits=args.portraits, limits=limits,
                       max_queue=args.max_queue, audio_chunk_seconds=args.audio_chunk_seconds,
                       shutdown_grace=args.shutdown_grace, threads=args.threads, backend=args.backend,
                       engines=args.engines, dtype=args.dtype))
    return 0


# ---- the parser -------------------------------------------------------------------------------
def _add_render_options(p) -> None:
    """How a video is rendered (RenderSettings), shared by render and eval: a flag left out takes the
    model's own value from its render.json."""
    defaults = "the model's own, from its render.json"
    p.add_argument("--scheduler", choices=a.SCHEDULER_NAMES, help=f"sampler (default: {defaults})")
    p.add_argument("--steps", type=a.STEPS, help=f"denoising steps per window, 1-1000 (default: {defaults})")
    p.add_argument("--cfg", type=a.CFG,
                   help=f"guidance scale on reference + audio, 0-30; 1 disables it (default: {defaults})")
    p.add_argument("--start", choices=["reference", "noise"],
                   help="each window's first latents: the reference's latents noised to the first timestep, "
                        f"or pure noise (default: {defaults})")
    p.add_argument("--seed", type=a.SEED, default=0)


def _add_render(sub) -> None:
    p = sub.add_parser("render", help="portrait + audio -> talking-head mp4 with the audio muxed")
    p.add_argument("image", help="reference portrait (png/jpg/webp)")
    p.add_argument("audio", help="speech or song (wav/flac/mp3/m4a/ogg)")
    p.add_argument("-o", "--output", default="out.mp4", help="output mp4 (default: out.mp4)")
    p.add_argument("--weights", help="model directory (default: the model shipped with emo-rt)")
    _add_render_options(p)
    p.add_argument("--speed", type=a.speed, help="head speed in deg/frame (0-10), or a file of per-second values")
    p.add_argument("--fps", type=a.integer(1, 1000), help="must match the weights (25 for all presets)")
    p.add_argument("--resolution", type=a.integer(8, 8192), help="must match the weights")
    p.add_argument("--face-box", type=a.face_box, help="x,y,w,h of the face in the image (skips detection)")
    p.add_argument("--no-crop", action="store_true", help="use the whole image (already face-centred)")
    p.add_argument("--preview", help="also write a contact sheet PNG of frames here")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "int8"],
                   help="default float32; with --backend openvino bfloat16 where the CPU computes it natively. "
                        "int8: onnxruntime's int8 engines (build-engines --precision int8)")
    p.add_argument("--device", type=a.device, help="torch device: cpu, cuda or cuda:N (default: cuda if present)")
    p.add_argument("--attention", default="auto", choices=["auto", "triton", "sdpa"],
                   help="temporal/reference attention: fused Triton kernels (auto = on CUDA) or SDPA")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "openvino", "tensorrt"],
                   help="what runs the networks: torch (default) or the engines in --engines (openvino: "
                        "onnxruntime's fp32 ONNX set compiled for this CPU, the fastest on CPU)")
    p.add_argument("--engines", help="engine directory from `emo-rt build-engines` (onnxruntime/openvino/tensorrt; "
                                     "--dtype float32, float16 or int8 picks fp32, fp16 or int8 engines; "
                                     "openvino runs float32 or, where the CPU has it, bfloat16)")
    p.add_argument("--threads", type=a.THREADS, help="torch intra-op threads (default: torch's, one per core)")
    overlap = p.add_mutually_exclusive_group()
    overlap.add_argument("--overlap", action="store_true",
                         help="decode and encode each window alongside the next one's denoising (same frames); "
                              "default: on with CUDA, on CPU only when --threads is at most half the cores")
    overlap.add_argument("--no-overlap", action="store_true", help="never overlap (see --overlap)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay the denoising step as CUDA graphs (torch and tensorrt on CUDA; "
                        "eager where capture fails)")
    p.add_argument("--separate-guidance", action="store_true",
                   help="guidance as two Backbone passes instead of one batch of 2 (less memory, slower)")
    p.add_argument("--reference-cache", metavar="DIR|off",
                   help="keep reference features here across renders (default: $EMO_RT_CACHE_DIR or "
                        "~/.cache/emo-rt/reference; off: compute them every render)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_render)


def _add_models(sub) -> None:
    p = sub.add_parser("build-engines", help="export the networks to ONNX / TensorRT engines for render --backend")
    p.add_argument("--weights", help="model directory (default: the model shipped with emo-rt)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="int8: onnxruntime on CPU, the VAE decoder quantised (VNNI), the rest fp32")
    p.add_argument("--out", default="engines", help="engine directory (default: ./engines); current engines "
                                                    "in it are reused, stale ones rebuilt")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_build_engines)

    p = sub.add_parser("new-model", help="write a model directory with random init (or imported weights)")
    p.add_argument("out")
    p.add_argument("--preset", default="tiny", choices=["tiny", "sd15"])
    p.add_argument("--seed", type=a.SEED, default=0)
    p.add_argument("--sd15-unet", help="SD1.5 UNet weights (diffusers dir or single .safetensors)")
    p.add_argument("--animatediff", help="AnimateDiff motion module weights (MotionAdapter dir or mm_sd_v15_v2.ckpt)")
    p.set_defaults(run=_new_model)

    p = sub.add_parser("info", help="parameter counts of the presets")
    p.set_defaults(run=_info)


def _add_data_and_training(sub) -> None:
    p = sub.add_parser("synth-data", help="generate the synthetic talking-head corpus (mp4 + wav + ground truth)")
    p.add_argument("out")
    p.add_argument("--clips", type=a.integer(1, 1_000_000), default=100)
    p.add_argument("--seed", type=a.SEED, default=0)
    p.add_argument("--size", type=a.integer(64, 2048, multiple_of=2), default=256,
                   help="frame side in pixels, even, 64-2048 (default 256)")
    p.add_argument("--seconds", type=a.number(0.5, 600.0), nargs="+", action=a.MinMax, default=[5.0],
                   help="clip length, or MIN MAX (seconds, 0.5-600)")
    p.add_argument("--workers", type=a.integer(1, 256), help="parallel processes (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=_synth_data)

    p = sub.add_parser("preprocess", help="videos (HDTF/VFHQ layout) -> training shards")
    p.add_argument("input", help="folder of videos (with audio), or of videos/frame folders (--no-audio)")
    p.add_argument("out", help="output folder for shards, index.json and report.json (resumable)")
    p.add_argument("--resolution", type=a.integer(32, 2048), default=128, help="crop side in pixels (default 128)")
    p.add_argument("--workers", type=a.integer(1, 256), help="parallel processes (default: all cores)")
    p.add_argument("--no-audio", action="store_true", help="stage-1 image data: keep clips without audio")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=_preprocess)

    p = sub.add_parser("train", help="one stage (0-4) of a training recipe; resumable; DDP under torchrun")
    p.add_argument("--recipe", required=True, help="training/recipes/<name>.yaml, or a shipped recipe's name")
    p.add_argument("--stage", required=True, type=int, choices=(0, 1, 2, 3, 4))
    p.add_argument("--data", required=True, nargs="+",
                   help="preprocessed shards (emo-rt preprocess OUT); several folders are trained on together")
    p.add_argument("--out", required=True, help="run directory shared by the stages")
    p.add_argument("--resume", action="store_true", help="continue from the stage's latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)


def _add_measuring(sub) -> None:
    p = sub.add_parser("eval", help="render held-out clips and score lip sync, expression, identity, "
                                    "flicker, drift and speed control against ground truth")
    p.add_argument("--data", required=True, help="preprocessed shards (`emo-rt preprocess`) of a synthetic corpus")
    p.add_argument("--corpus", required=True, help="that corpus's folder (`emo-rt synth-data`): the ground truth "
                                                   "is in its clips/<id>.json sidecars")
    p.add_argument("--out", required=True, help="report folder: report.json, report.md, curves.png")
    p.add_argument("--weights", help="model directory (default: the model shipped with emo-rt)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "openvino", "tensorrt"])
    p.add_argument("--engines", help="engine directory from `emo-rt build-engines` (onnxruntime/openvino/tensorrt)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="precision of the renders (bfloat16: torch's bf16 weights, or openvino's bf16 compute)")
    p.add_argument("--evaluator", help="face evaluator directory (default: the one shipped with emo-rt)")
    p.add_argument("--split", default="test", help="held-out split to render (default: test)")
    p.add_argument("--clips", type=a.integer(1, 100_000), default=2, help="clips rendered (default 2)")
    p.add_argument("--clip-seconds", type=a.number(0.0, None, above=True),
                   help="cut each clip to this many seconds (default: whole clips)")
    _add_render_options(p)
    p.add_argument("--reference-frame", type=a.integer(0), default=0, help="the clip frame used as the reference")
    p.add_argument("--drift-seconds", type=a.number(0.0, 3600.0), default=10.0,
                   help="length of the drift render of concatenated test audio (default 10; 0 skips it)")
    p.add_argument("--speeds", type=a.numbers(0.0, 10.0),
                   help="comma-separated --speed values for speed control (default: the lowest, middle and "
                        "highest speed bucket of --data, else of the model)")
    p.add_argument("--speed-seconds", type=a.number(0.0, 600.0), default=2.0,
                   help="audio per speed render (default 2; 0 skips)")
    p.add_argument("--seeds", type=a.integer(1, 100), default=1,
                   help="render the clips at this many seeds (--seed, --seed + 1, ...) and report each figure's mean "
                        "and sd over them; one seed moves brow r by about 0.04 and the FID analogue by 1-3 "
                        "(default 1)")
    p.add_argument("--threads", type=a.THREADS, help="torch intra-op threads (default: torch's, one per core)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_eval)

    p = sub.add_parser("bench", help="component latency, frames/s, real-time factor and utilisation: "
                                     "table, bench.json, bench.png")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--weights", help="model directory (default: the model shipped with emo-rt)")
    model.add_argument("--preset", choices=["tiny", "sd15"],
                       help="benchmark a random-init model of this preset instead")
    p.add_argument("--backend", action="append", choices=["torch", "onnxruntime", "openvino"],
                   help="backends to measure, repeatable (default: all three; torch always runs)")
    p.add_argument("--engines",
                   help="onnxruntime fp32 engine directory, which openvino runs too (default: built in a temp "
                        "dir, not with --quick)")
    p.add_argument("--quick", action="store_true", help="the short CI run: 1 s of audio, 2 steps, fewer levers")
    p.add_argument("--seconds", type=a.number(0.0, 600.0, above=True),
                   help="audio length of each end-to-end render (default 2, quick 1)")
    p.add_argument("--steps", type=a.STEPS, help="denoising steps of the renders (default 4, quick 2)")
    p.add_argument("--cfg", type=a.CFG, help="guidance of the renders (default 3.5)")
    p.add_argument("--threads", type=a.THREADS, help="torch intra-op threads (default: torch's)")
    p.add_argument("--rounds", type=a.integer(1, 100),
                   help="interleaved rounds of the renders, best kept (default 2, quick 1)")
    p.add_argument("--out", default="bench", help="output directory for bench.json and bench.png (default: ./bench)")
    p.add_argument("--json", action="store_true", help="also print the JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no stage messages")
    p.set_defaults(run=_bench)


def _add_release(sub) -> None:
    p = sub.add_parser("ship", help="release step: a finished run's model as a shipped model (fp16, size-capped)")
    p.add_argument("run_dir", metavar="run",  # not dest "run": that is the handler main() calls
                   help="run directory of `emo-rt train` (its last finished stage's model is shipped)")
    p.add_argument("out", help="destination model directory, e.g. emo_rt/default_model")
    p.add_argument("--max-mb", type=a.number(0.0, None, above=True), default=25.0, help="size limit (default 25)")
    p.add_argument("--stage", type=int, choices=(0, 1, 2, 3, 4),
                   help="ship this stage's model (default: the last finished one)")
    p.set_defaults(run=_ship)

    p = sub.add_parser("model-card", help="release step: a shipped model's README.md from its measurements")
    p.add_argument("model", help="shipped model directory, e.g. emo_rt/default_model")
    p.add_argument("--report", required=True, help="`emo-rt eval` report folder (its report.json)")
    p.add_argument("--corpus", required=True, nargs="+",
                   help="the corpus folders the model was trained on (`emo-rt synth-data`; their manifest.json)")
    p.add_argument("--notes", help="a Markdown file appended to the card (what was seen beyond the table)")
    p.add_argument("--baseline", help="the previous model's eval report folder: its model row beside the new one")
    p.add_argument("--recipe", help="the recipe the model was trained with, as the card names it "
                   "(default: training/recipes/tiny.yaml)")
    p.set_defaults(run=_model_card)

    p = sub.add_parser("train-evaluator", help="release step: train the face evaluator on a corpus's train split")
    p.add_argument("--data", required=True, help="preprocessed shards of a synthetic corpus")
    p.add_argument("--corpus", required=True, help="the synthetic corpus folder (clips/<id>.json sidecars)")
    p.add_argument("--out", help="evaluator directory (default: the one shipped in the package)")
    p.add_argument("--steps", type=a.integer(1), default=2500)
    p.add_argument("--batch", type=a.integer(1, 4096), default=64)
    p.add_argument("--lr", type=a.number(0.0, 1.0, above=True), default=3e-3)
    p.add_argument("--seed", type=a.SEED, default=0)
    p.add_argument("--threads", type=a.THREADS, default=1)
    p.add_argument("--part", default="all", choices=["all", "labels", "identity"],
                   help="what to train: the label network, the identity embedding, or both (default)")
    p.add_argument("--identity-data", nargs=2, action="append", metavar=("SHARDS", "CORPUS"),
                   help="another corpus whose train-split identities the identity embedding also learns (repeatable)")
    p.add_argument("--identity-steps", type=a.integer(1), default=3000)
    p.add_argument("--figures-only", action="store_true",
                   help="no training: recompute the val/test figures and the card of the weights in --out")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=_train_evaluator)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="a web page where the portrait talks as it is generated, and POST /api/render")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=a.integer(1, 65535), default=7860, help="port, 1-65535 (default 7860)")
    p.add_argument("--weights", help="model directory (default: the model shipped with emo-rt)")
    p.add_argument("--portraits", help="a folder of portraits the page offers to pick (default: uploads only)")
    p.add_argument("--max-upload-mb", type=a.number(0.0, 4096.0, above=True), default=20.0,
                   help="largest portrait or audio file accepted, MB (default 20)")
    p.add_argument("--max-seconds", type=a.number(0.0, 3600.0, above=True), default=60.0,
                   help="longest audio rendered, seconds (default 60)")
    p.add_argument("--max-queue", type=a.integer(1, 10_000), default=16, help="renders waiting at most (default 16)")
    p.add_argument("--audio-chunk-seconds", type=a.number(0.04, 30.0), default=2.0,
                   help="the audio encoder's chunk, seconds: smaller ones bring the first frames sooner "
                        "(default 2; 30, the render's, gives `emo-rt render`'s frames)")
    p.add_argument("--shutdown-grace", type=a.number(0.0, 3600.0), default=10.0,
                   help="on SIGTERM, seconds a render in flight may take to finish before it is stopped (default 10)")
    p.add_argument("--threads", type=a.THREADS, help="torch intra-op threads (default: torch's, one per core)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "openvino"],
                   help="what runs the networks (as for render; openvino is the fastest on CPU)")
    p.add_argument("--engines", help="engine directory from `emo-rt build-engines` (onnxruntime/openvino)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"],
                   help="default float32; with --backend openvino bfloat16 where the CPU computes it natively")
    p.set_defaults(run=_serve)


def build_parser() -> a.Parser:
    parser = a.Parser(prog="emo-rt", description="EMO-style audio-driven portrait video, fast.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_render(sub)
    _add_models(sub)
    _add_data_and_training(sub)
    _add_measuring(sub)
    _add_release(sub)
    _add_serve(sub)
    return parser


# ---- the one error path -------------------------------------------------------------------------
STOP_LINES = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("terminated", 143)}


def _stopped(signum: int) -> int:
    word, code = STOP_LINES[signum]
    print(f"emo-rt: {word} (no partial output was kept)", file=sys.stderr)
    return code


def _signal_handlers(received: list[int]):
    """SIGINT -> KeyboardInterrupt, SIGTERM -> Terminated, each noted in `received` first: a library
    that turns the exception raised in its callback into its own error (safetensors' loader gives a
    ValueError) still ends as the signal it was."""
    def on_sigint(signum, frame) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    def on_sigterm(signum, frame) -> None:
        received.append(signum)
        raise Terminated()

    return on_sigint, on_sigterm


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad argument (2, its one line already printed)
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    warnings.formatwarning = lambda message, category, *rest, **kw: f"emo-rt: warning: {message}\n"
    main_thread = threading.current_thread() is threading.main_thread()  # signals reach only that one
    received: list[int] = []
    on_sigint, on_sigterm = _signal_handlers(received)
    previous = {}
    if main_thread:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with it ignored
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_sigint)
    try:
        return int(args.run(args) or 0)
    except EmoError as err:
        if received:
            return _stopped(received[-1])
        print(f"emo-rt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _stopped(signal.SIGINT)
    except Terminated:
        return _stopped(signal.SIGTERM)
    except Exception:
        if not received:
            raise
        return _stopped(received[-1])  # the signal, turned into another error by the code it landed in
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
