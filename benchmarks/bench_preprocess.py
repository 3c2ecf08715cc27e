"""Throughput and accuracy of `emo-rt preprocess` on a synthetic corpus (ground truth in its sidecars).

    python benchmarks/bench_preprocess.py                          # 24 clips of 5 s, 256 px -> 128 px
    python benchmarks/bench_preprocess.py --clips 100 --workers 2 --json out.json

Generates the corpus (or reuses --corpus), preprocesses it into a fresh folder and prints clips/s,
video seconds per wall second, frames/s, and the checks of tests/training/test_preprocess.py: face
box IoU against the sidecars, head-speed Spearman across clips, mouth vs audio envelope. Wall time
includes starting the worker processes (~6 s each: mediapipe's import). The load average is printed
because other work on a shared machine slows this one down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from emo_rt.training.data.preprocess import preprocess
from emo_rt.training.data.preprocess.evaluate import compare_with_sidecars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=256, help="corpus frame size")
    parser.add_argument("--resolution", type=int, default=128, help="shard resolution")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, help="an existing corpus folder (else one is generated)")
    parser.add_argument("--keep", type=Path, help="keep the shards here (else a temporary folder)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        corpus = args.corpus
        if corpus is None:
            from emo_rt.training.data.synth import generate_corpus

            corpus = scratch / "corpus"
            t = time.perf_counter()
            generate_corpus(corpus, args.clips, seed=args.seed, size=args.size, seconds=args.seconds,
                            workers=args.workers, progress=True)
            print(f"corpus: {args.clips} clips in {time.perf_counter() - t:.1f} s")
        out = args.keep or scratch / "shards"
        if out.exists():
            shutil.rmtree(out)
        load = os.getloadavg()[0]
        t = time.perf_counter()
        report = preprocess(corpus, out, resolution=args.resolution, workers=args.workers, progress=True)
        wall = time.perf_counter() - t
        quality = compare_with_sidecars(out, corpus)
        frames = sum(c["num_frames"] for c in report.clips)
        figures = {
            "clips": report.sources, "kept": report.kept_clips, "workers": args.workers,
            "resolution": args.resolution, "source_size": args.size, "wall_s": round(wall, 2),
            "clips_per_s": round(report.sources / wall, 3),
            "video_s_per_s": round(frames / 25 / wall, 3),
            "frames_per_s": round(frames / wall, 1),
            "load_average_at_start": round(load, 2),
            "iou_mean": round(quality.iou_mean, 4), "iou_rate": round(quality.iou_rate, 4),
            "speed_spearman": round(quality.speed_spearman, 4),
            "mouth_envelope_r": round(quality.mouth_envelope_r, 4),
            "mouth_envelope_r_5_frames_off": round(quality.mouth_envelope_r_shifted, 4),
        }
        print(report.summary())
        print(quality.summary())
        print(f"throughput: {figures['clips_per_s']} clips/s, {figures['frames_per_s']} frames/s, "
              f"{figures['video_s_per_s']} s of video per s ({args.workers} workers, load average {load:.1f})")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
