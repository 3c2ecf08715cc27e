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
    pipeline = EmoPipeline.from_pretrained(args.weights, dtype=getattr(torch, args.dtype),
                                           device=args.device, attention=args.attention)
    if args.resolution is not None and args.resolution != pipeline.config.resolution:
        raise EmoError(f"--resolution {args.resolution}: these weights render at {pipeline.config.resolution}")
    if args.fps is not None and args.fps != pipeline.config.fps:
        raise EmoError(f"--fps {args.fps}: these weights were trained at {pipeline.config.fps} fps")
    settings = RenderSettings(scheduler=args.scheduler, steps=args.steps, cfg=args.cfg, speed=speed, seed=args.seed)
    stats = render(args.image, args.audio, args.output, pipeline, settings, face_box=args.face_box,
                   no_crop=args.no_crop, preview=args.preview, show_progress=not args.quiet)
    print(f"wrote {args.output}: {stats.line()}")
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


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


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
    p.add_argument("--cfg", type=float, default=3.5, help="guidance on reference + audio; 1.0 disables it")
    p.add_argument("--speed", help="head speed in deg/frame, or a file of per-second values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=int, help="must match the weights (25 for all presets)")
    p.add_argument("--resolution", type=int, help="must match the weights")
    p.add_argument("--face-box", help="x,y,w,h of the face in the image (skips detection)")
    p.add_argument("--no-crop", action="store_true", help="use the whole image (already face-centred)")
    p.add_argument("--preview", help="also write a contact sheet PNG of frames here")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cuda" if _cuda() else "cpu", help="torch device (default: cuda if present)")
    p.add_argument("--attention", default="auto", choices=["auto", "triton", "sdpa"],
                   help="temporal/reference attention: fused Triton kernels (auto = on CUDA) or SDPA")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_render)

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
