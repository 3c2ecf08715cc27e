"""Render time and peak memory vs audio length (issue 3: memory flat, time linear).

Renders the same portrait with 10 s and 60 s of audio, each in a fresh process, with a tiny
model (random init unless --weights) at the model's own render settings (its render.json) unless
--steps / --cfg are given, and reports wall time, CPU time, the time to the first frames, peak RSS
and their ratios. Each length is rendered --rounds times, interleaved, and the fastest render of
each length is compared: the 2-core box's speed drifts by 20-30% over tens of seconds, so one
render of each can read a ratio from 4.1 to 5.6 for the same code.

CPU time (user + system of the render process) is the figure to compare on a shared machine: wall
time also counts the time other jobs hold the cores, and that changes between two long runs.
`--threads 1` makes CPU time equal wall time on an idle machine.

    python benchmarks/bench_render_scaling.py [--weights DIR] [--steps S] [--cfg G] [--threads N] [--rounds R]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

CHILD = """
import sys, time, resource, json, os
import torch
if int(sys.argv[6]):
    torch.set_num_threads(int(sys.argv[6]))
from emo_rt.pipeline import EmoPipeline, preload_input_readers, render, with_overrides
from emo_rt.runtime.overlap import overlap_pays
pipe = EmoPipeline.from_pretrained(sys.argv[1])
preload_input_readers()  # as `emo-rt render` does at start-up: DALI and the face detector imported
overlap = overlap_pays("cpu", torch.get_num_threads())  # as `emo-rt render` decides it
settings = with_overrides(pipe.defaults, overlap=overlap, **json.loads(sys.argv[5]))
t, c = time.perf_counter(), time.process_time()
stats = render(sys.argv[2], sys.argv[3], sys.argv[4], pipe, settings, show_progress=False)
print(json.dumps({"frames": stats.frames, "render_seconds": time.perf_counter() - t,
                  "first_frames_seconds": stats.first_frames_seconds, "steps": settings.steps, "cfg": settings.cfg,
                  "overlap": overlap,
                  "cpu_seconds": time.process_time() - c, "threads": torch.get_num_threads(),
                  "load_average": os.getloadavg()[0],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def speech(path: Path, seconds: float, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * (np.sin(2 * np.pi * 3 * t) > 0) * np.sin(2 * np.pi * 180 * t)
    sf.write(path, wave.astype(np.float32), rate)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's render.json)")
    parser.add_argument("--cfg", type=float, help="guidance scale (default: the model's render.json)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in the render process (0: torch's default)")
    parser.add_argument("--lengths", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="renders of each length, interleaved; the fastest of each is compared (default 3)")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emo-scaling-"))
    weights = args.weights
    if weights is None:
        weights = str(work / "model")
        subprocess.run([sys.executable, "-m", "emo_rt.cli", "new-model", weights, "--preset", "tiny"], check=True,
                       capture_output=True)
    image = work / "ref.png"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from PIL import Image

    from tests.pipeline.conftest import draw_face

    Image.fromarray(draw_face()).save(image)
    overrides = json.dumps({"steps": args.steps, "cfg": args.cfg})  # None: the model's render.json
    runs: dict[float, list[dict]] = {seconds: [] for seconds in args.lengths}
    for round_index in range(args.rounds):  # interleaved: a slow spell of the machine hits every length
        for seconds in args.lengths:
            audio = speech(work / f"a{seconds:g}.wav", seconds)
            out = subprocess.run([sys.executable, "-c", CHILD, weights, str(image), str(audio), str(work / "out.mp4"),
                                  overrides, str(args.threads)], check=True, capture_output=True, text=True)
            row = {"audio_seconds": seconds, "round": round_index, **json.loads(out.stdout.strip().splitlines()[-1])}
            runs[seconds].append(row)
            print(f"{seconds:6.1f} s audio: {row['frames']} frames, {row['render_seconds']:.1f} s wall, "
                  f"{row['cpu_seconds']:.1f} s CPU ({row['threads']} threads, load {row['load_average']:.1f} "
                  f"at the end), first frames after {row['first_frames_seconds']:.2f} s, {row['steps']} steps "
                  f"at cfg {row['cfg']:g}, "
                  f"overlap {'on' if row['overlap'] else 'off'}, "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    rows = [min(runs[seconds], key=lambda r: r["render_seconds"]) for seconds in args.lengths]  # least disturbed
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        median = {s: float(np.median([r["render_seconds"] for r in runs[s]]))
                  for s in (a["audio_seconds"], b["audio_seconds"])}
        rss = {s: max(r["peak_rss_mb"] for r in runs[s]) for s in (a["audio_seconds"], b["audio_seconds"])}
        print(f"fastest of {args.rounds}: {a['render_seconds']:.1f} s / {b['render_seconds']:.1f} s, "
              f"wall time ratio {b['render_seconds'] / a['render_seconds']:.2f}, CPU time ratio "
              f"{b['cpu_seconds'] / a['cpu_seconds']:.2f} (audio ratio "
              f"{b['audio_seconds'] / a['audio_seconds']:.1f}); median wall ratio "
              f"{median[b['audio_seconds']] / median[a['audio_seconds']]:.2f}; peak RSS ratio "
              f"{rss[b['audio_seconds']] / rss[a['audio_seconds']]:.3f}")
    if args.json:
        every = [r for seconds in args.lengths for r in runs[seconds]]
        Path(args.json).write_text(json.dumps({"weights": args.weights, "fastest": rows, "runs": every}, indent=1))


if __name__ == "__main__":
    main()
