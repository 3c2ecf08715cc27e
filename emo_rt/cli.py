"""The `emo-rt` command line: parses arguments and calls the API, nothing more."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from emo_rt.errors import EmoError


def _render(args: argparse.Namespace) -> int:
    import torch

    from emo_rt.pipeline import EmoPipeline, RenderSettings, render

    speed = args.speed
    if speed is not None:
        try:
            speed = float(speed)
        except ValueError:
            speed = Path(speed)
    if args.engines is not None and args.backend == "torch":
        raise EmoError("--engines is for --backend onnxruntime or tensorrt (torch runs the weights themselves)")
    if args.threads:
        torch.set_num_threads(args.threads)
    from emo_rt.runtime.reference_cache import cache_dir_option

    pipeline = EmoPipeline.from_pretrained(args.weights, dtype=getattr(torch, args.dtype),
                                           device=args.device or ("cuda" if _cuda() else "cpu"),
                                           attention=args.attention, backend=args.backend,
                                           engine_dir=args.engines,
                                           reference_cache=cache_dir_option(args.reference_cache))
    if not args.quiet:
        print(f"backend: {pipeline.components.name}")  # onnxruntime: the providers its sessions really use
    if args.resolution is not None and args.resolution != pipeline.config.resolution:
        raise EmoError(f"--resolution {args.resolution}: these weights render at {pipeline.config.resolution}")
    if args.fps is not None and args.fps != pipeline.config.fps:
        raise EmoError(f"--fps {args.fps}: these weights were trained at {pipeline.config.fps} fps")
    from emo_rt.runtime.overlap import overlap_pays

    device = getattr(pipeline.components, "device", "cpu")
    overlap = args.overlap or (not args.no_overlap and overlap_pays(device, torch.get_num_threads()))
    settings = RenderSettings(scheduler=args.scheduler, steps=args.steps, cfg=args.cfg, guide=args.guide,
                              start=args.start, speed=speed, seed=args.seed, batch_guidance=not args.separate_guidance, overlap=overlap)
    stats = render(args.image, args.audio, args.output, pipeline, settings, face_box=args.face_box,
                   no_crop=args.no_crop, preview=args.preview, show_progress=not args.quiet)
    print(f"wrote {args.output}: {stats.line()} ({pipeline.components.name})")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json
    import tempfile

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


def _build_engines(args: argparse.Namespace) -> int:
    from emo_rt.export import build_engines
    from emo_rt.pipeline import default_model_dir

    weights = args.weights if args.weights is not None else default_model_dir()
    report = build_engines(weights, args.backend, args.precision, args.out, progress=not args.quiet)
    print(report.summary())
    return 0


def _new_model(args: argparse.Namespace) -> int:
    import torch

    from emo_rt.config import PRESETS
    from emo_rt.models import EmoModel

    torch.manual_seed(args.seed)
    model = EmoModel(PRESETS[args.preset]())
    if args.sd15_unet:
        from emo_rt.models.weights import import_sd15_unet
        print(import_sd15_unet(model, args.sd15_unet).summary())
    if args.animatediff:
        from emo_rt.models.weights import import_animatediff
        print(import_animatediff(model, args.animatediff).summary())
    model.save_pretrained(args.out)
    print(f"wrote {args.out} ({args.preset}, random init seed {args.seed} where not imported)")
    return 0


def _synth_data(args: argparse.Namespace) -> int:
    from emo_rt.training.data.synth import generate_corpus

    seconds = args.seconds[0] if len(args.seconds) == 1 else tuple(args.seconds)
    manifest = generate_corpus(Path(args.out), args.clips, args.seed, size=args.size, seconds=seconds,
                               workers=args.workers or os.cpu_count(), progress=not args.quiet)
    print(f"wrote {manifest}")
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from emo_rt.training.data.preprocess import preprocess

    report = preprocess(args.input, args.out, args.resolution, args.workers, require_audio=not args.no_audio,
                        progress=not args.quiet)
    print(report.summary())
    return 0


def _info(args: argparse.Namespace) -> int:
    import torch

    from emo_rt.config import PRESETS
    from emo_rt.models import EmoModel

    print(f"{'preset':8} " + " ".join(f"{p:>15}" for p in EmoModel.PARTS) + f" {'total':>9}")
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            model = EmoModel(preset())
        counts = [sum(p.numel() for p in getattr(model, part).parameters()) for part in EmoModel.PARTS]
        print(f"{name:8} " + " ".join(f"{c / 1e6:14.2f}M" for c in counts) + f" {sum(counts) / 1e6:8.1f}M")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import time

    from emo_rt.eval import EvalSettings, run_eval

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    speeds = None
    if args.speeds is not None:
        try:
            speeds = tuple(float(v) for v in args.speeds.split(",") if v.strip())
        except ValueError:
            raise EmoError(f"--speeds {args.speeds!r}: give comma-separated head speeds in deg/frame") from None
    settings = EvalSettings(clips=args.clips, clip_seconds=args.clip_seconds, split=args.split,
                            scheduler=args.scheduler, steps=args.steps, cfg=args.cfg, guide=args.guide,
                            start=args.start, seed=args.seed, reference_frame=args.reference_frame, drift_seconds=args.drift_seconds,
                            speeds=speeds, speed_seconds=args.speed_seconds)
    started = time.perf_counter()
    report, paths = run_eval(args.data, args.corpus, args.out, args.weights, settings, backend=args.backend,
                             engines=args.engines, evaluator_dir=args.evaluator, progress=not args.quiet)
    from emo_rt.eval.report import table

    print(table(report))
    print(f"wrote {paths['json']}, {paths['md'].name}, {paths['png'].name} in {time.perf_counter() - started:.1f} s "
          f"({report['timings']['rendered_frames']} frames rendered in {report['timings']['render_seconds']:.1f} s)")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from emo_rt.training.command import add_arguments

    add_arguments(parser)


def _train(args: argparse.Namespace) -> int:
    from emo_rt.training.trainer import run

    return run(args)


def _add_window_options(p: argparse.ArgumentParser) -> None:
    """--guide and --start, shared by render and eval (RenderSettings.guide / .start)."""
    p.add_argument("--guide", default="all", choices=["all", "audio"],
                   help="what guidance amplifies: all (reference + audio, default) or audio (keeps the reference "
                        "in the unconditional pass)")
    p.add_argument("--start", default="reference", choices=["reference", "noise"],
                   help="each window's first latents: the reference's latents noised to the first timestep "
                        "(default) or pure noise")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emo-rt", description="EMO-style audio-driven portrait video, fast.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("render", help="portrait + audio -> talking-head mp4 with the audio muxed")
    p.add_argument("image", help="reference portrait (png/jpg/webp)")
    p.add_argument("audio", help="speech or song (wav/flac/mp3/m4a/ogg)")
    p.add_argument("-o", "--output", default="out.mp4", help="output mp4 (default: out.mp4)")
    p.add_argument("--weights", help="model directory (default: the model shipped with emo-rt)")
    p.add_argument("--scheduler", default="ddim", help="ddim (default), ddpm, dpm++, euler, unipc")
    p.add_argument("--steps", type=int, default=40, help="denoising steps per window (default 40)")
    p.add_argument("--cfg", type=float, default=3.5, help="guidance scale (--guide); 1.0 disables it")
    _add_window_options(p)
    p.add_argument("--speed", help="head speed in deg/frame, or a file of per-second values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=int, help="must match the weights (25 for all presets)")
    p.add_argument("--resolution", type=int, help="must match the weights")
    p.add_argument("--face-box", help="x,y,w,h of the face in the image (skips detection)")
    p.add_argument("--no-crop", action="store_true", help="use the whole image (already face-centred)")
    p.add_argument("--preview", help="also write a contact sheet PNG of frames here")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", help="torch device (default: cuda if present)")
    p.add_argument("--attention", default="auto", choices=["auto", "triton", "sdpa"],
                   help="temporal/reference attention: fused Triton kernels (auto = on CUDA) or SDPA")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"],
                   help="what runs the networks: torch (default) or the engines in --engines")
    p.add_argument("--engines", help="engine directory from `emo-rt build-engines` (onnxruntime/tensorrt; "
                                     "--dtype float32 or float16 picks fp32 or fp16 engines)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    overlap = p.add_mutually_exclusive_group()
    overlap.add_argument("--overlap", action="store_true",
                         help="decode and encode each window alongside the next one's denoising (same frames); "
                              "default: on with CUDA, on CPU only when --threads is at most half the cores")
    overlap.add_argument("--no-overlap", action="store_true", help="never overlap (see --overlap)")
    p.add_argument("--separate-guidance", action="store_true",
                   help="guidance as two Backbone passes instead of one batch of 2 (less memory, slower)")
    p.add_argument("--reference-cache", metavar="DIR|off",
                   help="keep reference features here across renders (default: $EMO_RT_CACHE_DIR or "
                        "~/.cache/emo-rt/reference; off: compute them every render)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_render)

    p = sub.add_parser("build-engines", help="export the networks to ONNX / TensorRT engines for render --backend")
    p.add_argument("--weights", help="model directory (default: the model shipped with emo-rt)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--out", default="engines", help="engine directory (default: ./engines); current engines "
                                                    "in it are reused, stale ones rebuilt")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_build_engines)

    p = sub.add_parser("new-model", help="write a model directory with random init (or imported weights)")
    p.add_argument("out")
    p.add_argument("--preset", default="tiny", choices=["tiny", "sd15"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sd15-unet", help="SD1.5 UNet weights (diffusers dir or single .safetensors)")
    p.add_argument("--animatediff", help="AnimateDiff motion module weights (MotionAdapter dir or mm_sd_v15_v2.ckpt)")
    p.set_defaults(run=_new_model)

    p = sub.add_parser("synth-data", help="generate the synthetic talking-head corpus (mp4 + wav + ground truth)")
    p.add_argument("out")
    p.add_argument("--clips", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="frame side in pixels (default 256)")
    p.add_argument("--seconds", type=float, nargs="+", default=[5.0], help="clip length, or MIN MAX")
    p.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=_synth_data)

    p = sub.add_parser("preprocess", help="videos (HDTF/VFHQ layout) -> training shards")
    p.add_argument("input", help="folder of videos (with audio), or of videos/frame folders (--no-audio)")
    p.add_argument("out", help="output folder for shards, index.json and report.json (resumable)")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--no-audio", action="store_true", help="stage-1 image data: keep clips without audio")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=_preprocess)

    p = sub.add_parser("train", help="one stage (0-3) of a training recipe; resumable; DDP under torchrun")
    _train_arguments(p)
    p.set_defaults(run=_train)

    p = sub.add_parser("eval", help="render held-out clips and score lip sync, expression, identity, "
                                    "flicker, drift and speed control against ground truth")
    p.add_argument("--data", required=True, help="preprocessed shards (`emo-rt preprocess`) of a synthetic corpus")
    p.add_argument("--corpus", required=True, help="that corpus's folder (`emo-rt synth-data`): the ground truth "
                                                   "is in its clips/<id>.json sidecars")
    p.add_argument("--out", required=True, help="report folder: report.json, report.md, curves.png")
    p.add_argument("--weights", help="model directory (default: the model shipped with emo-rt)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    p.add_argument("--engines", help="engine directory from `emo-rt build-engines` (onnxruntime/tensorrt)")
    p.add_argument("--evaluator", help="face evaluator directory (default: the one shipped with emo-rt)")
    p.add_argument("--split", default="test", help="held-out split to render (default: test)")
    p.add_argument("--clips", type=int, default=2, help="clips rendered (default 2)")
    p.add_argument("--clip-seconds", type=float, help="cut each clip to this many seconds (default: whole clips)")
    p.add_argument("--scheduler", default="ddim")
    p.add_argument("--steps", type=int, default=8, help="denoising steps per window (default 8)")
    p.add_argument("--cfg", type=float, default=1.0, help="guidance (default 1.0: none, one Backbone pass per step)")
    _add_window_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference-frame", type=int, default=0, help="the clip frame used as the reference (default 0)")
    p.add_argument("--drift-seconds", type=float, default=10.0,
                   help="length of the drift render of concatenated test audio (default 10; the issue's figure "
                        "is over 60; 0 skips it)")
    p.add_argument("--speeds", help="comma-separated --speed values for speed control (default: the lowest, middle and "
                                    "highest speed bucket of --data, else of the model)")
    p.add_argument("--speed-seconds", type=float, default=2.0, help="audio per speed render (default 2; 0 skips)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_eval)

    p = sub.add_parser("bench", help="component latency, frames/s, real-time factor and utilisation: "
                                     "table, bench.json, bench.png")
    p.add_argument("--weights", help="model directory (default: the model shipped with emo-rt)")
    p.add_argument("--preset", choices=["tiny", "sd15"], help="benchmark a random-init model of this preset instead")
    p.add_argument("--backend", action="append", choices=["torch", "onnxruntime"],
                   help="backends to measure, repeatable (default: torch and onnxruntime; torch always runs)")
    p.add_argument("--engines", help="onnxruntime fp32 engine directory (default: built in a temp dir, not with --quick)")
    p.add_argument("--quick", action="store_true", help="the short CI run: 1 s of audio, 2 steps, fewer levers")
    p.add_argument("--seconds", type=float, help="audio length of each end-to-end render (default 2, quick 1)")
    p.add_argument("--steps", type=int, help="denoising steps of the renders (default 4, quick 2)")
    p.add_argument("--cfg", type=float, help="guidance of the renders (default 3.5)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--rounds", type=int, help="interleaved rounds of the renders, best kept (default 2, quick 1)")
    p.add_argument("--out", default="bench", help="output directory for bench.json and bench.png (default: ./bench)")
    p.add_argument("--json", action="store_true", help="also print the JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no stage messages")
    p.set_defaults(run=_bench)

    p = sub.add_parser("info", help="parameter counts of the presets")
    p.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    warnings.formatwarning = lambda message, category, *a, **k: f"emo-rt: warning: {message}\n"
    try:
        return int(args.run(args) or 0)
    except EmoError as err:
        print(f"emo-rt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emo-rt: interrupted (no partial output was kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
