"""torch eager vs onnxruntime: per-component latency and end-to-end render frames/s.

    python benchmarks/bench_backends.py                       # tiny random-init model, built here
    python benchmarks/bench_backends.py --weights DIR --engines DIR --threads 1 --json out.json

Per component: the engine's inputs from its export spec at the sizes TensorRT tunes for (`opt`),
the same tensors to both backends; median of --repeats calls after 2 warm-up calls. End to end: one
render of --seconds of audio (EmoPipeline, DDIM --steps, guidance --cfg) per backend, frames per
wall-clock second, the session/model load excluded. Both backends use the same thread count. Prints
a table, then the JSON. On a shared machine the numbers move with the other processes (and
multi-threaded runs suffer most): the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emo_rt.bench import timed
from emo_rt.export import build_engines
from emo_rt.export.specs import export_specs
from emo_rt.io.image import FaceBox, prepare_reference
from emo_rt.models import EmoModel
from emo_rt.pipeline import EmoPipeline, RenderSettings
from emo_rt.runtime.backends import load_components
from emo_rt.runtime.components import TorchComponents
from emo_rt.schedulers import noise_schedule


def component_latency(model: EmoModel, ort, repeats: int) -> list[dict]:
    rows = []
    for name, spec in export_specs(model.config).items():
        sizes = spec.sizes("opt")
        inputs = spec.sample_inputs(generator=torch.Generator().manual_seed(0), **sizes)
        module = spec.wrapper(model)
        named = dict(zip(spec.input_names, inputs))

        def eager(module=module, inputs=inputs):
            with torch.inference_mode():
                module(*inputs)

        torch_s = timed(eager, repeats)
        ort_s = timed(lambda name=name, named=named: ort.run(name, **named), repeats)
        rows.append({"component": name, "sizes": sizes, "torch_ms": 1e3 * torch_s, "onnxruntime_ms": 1e3 * ort_s,
                     "speedup": torch_s / ort_s})
    return rows


def render_fps(components, config, seconds: float, steps: int, cfg: float) -> dict:
    size = config.resolution
    y, x = np.mgrid[:size, :size] / size
    image = (np.stack([0.3 + 0.4 * x, 0.4 + 0.2 * y, 0.6 - 0.3 * x], -1) * 255).astype(np.uint8)
    reference = prepare_reference(image, size, face_box=FaceBox(size // 4, size // 5, size // 2, size * 3 // 5))
    rate = config.audio.sample_rate
    t = np.arange(int(seconds * rate)) / rate
    waveform = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    pipeline = EmoPipeline(components, noise_schedule(None))
    settings = RenderSettings(steps=steps, cfg=cfg, seed=0)
    started = time.perf_counter()
    frames = sum(len(chunk) for chunk in pipeline(reference, waveform, settings))
    wall = time.perf_counter() - started
    return {"frames": frames, "seconds": wall, "frames_per_second": frames / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="model directory (default: a tiny random-init model made here)")
    parser.add_argument("--engines", help="onnxruntime fp32 engine directory (built or refreshed here)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="audio length of the end-to-end render")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cfg", type=float, default=3.5)
    parser.add_argument("--threads", type=int, help="intra-op threads for both backends (default: torch's)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    scratch = tempfile.TemporaryDirectory(prefix="emo-rt-bench-")
    weights = Path(args.weights) if args.weights else None
    if weights is None:
        from emo_rt.config import tiny

        torch.manual_seed(0)
        weights = EmoModel(tiny()).save_pretrained(Path(scratch.name) / "model")
    engines = Path(args.engines) if args.engines else Path(scratch.name) / "engines"
    build = build_engines(weights, "onnxruntime", "fp32", engines, progress=True)
    model = EmoModel.from_pretrained(weights)
    ort = load_components("onnxruntime", weights, engines, threads=torch.get_num_threads())

    rows = component_latency(model, ort, args.repeats)
    render = {backend: render_fps(comp, model.config, args.seconds, args.steps, args.cfg)
              for backend, comp in (("torch", TorchComponents(model)), ("onnxruntime", ort))}
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
        "versions": {"torch": torch.__version__, "onnxruntime": build.backend_version},
        "providers": sorted({p[0] for p in ort.providers.values()}),
        "model": {"resolution": model.config.resolution, "num_frames": model.config.num_frames},
        "components": rows,
        "render": {**render, "settings": {"seconds": args.seconds, "steps": args.steps, "cfg": args.cfg},
                   "speedup": render["onnxruntime"]["frames_per_second"] / render["torch"]["frames_per_second"]},
    }

    print(f"\n{'component':16} {'sizes':28} {'torch ms':>10} {'ort ms':>10} {'speedup':>8}")
    for r in rows:
        sizes = ",".join(f"{k}={v}" for k, v in r["sizes"].items()) or "static"
        print(f"{r['component']:16} {sizes:28} {r['torch_ms']:10.2f} {r['onnxruntime_ms']:10.2f} "
              f"{r['speedup']:7.2f}x")
    for backend, r in render.items():
        print(f"render {backend:12} {r['frames']} frames in {r['seconds']:.1f} s: "
              f"{r['frames_per_second']:.2f} frames/s")
    print(f"onnxruntime / torch end to end: {result['render']['speedup']:.2f}x "
          f"(load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}: shared machines make these noisy)")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
