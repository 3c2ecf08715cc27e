"""Probe: the step network quantised to int8 by NNCF for OpenVINO, against the bf16 and fp32 step.

Calibration: the step's real inputs, recorded while the shipped model renders corpus training clips
(their first frame as the reference, their own audio) on OpenVINO fp32. Held out: the same from
other clips. Reports ms per pass (interleaved, fastest / median) and the relative RMS error of each
variant's output against fp32.

    python lab/int8/ov_step.py ENGINES CORPUS_CLIPS [--calibration 6] [--held-out 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from PIL import Image

from emo_rt.io.video import read_video
from emo_rt.pipeline import EmoPipeline, default_model_dir, load_inputs, model_render_settings, with_overrides
from emo_rt.runtime.backends import load_components


def recorded_step_inputs(components, pipeline, clips: list[Path]) -> list[dict[str, np.ndarray]]:
    """The step's inputs (one dict per pass) while rendering each clip from its first frame and audio."""
    records, execute = [], components._execute

    def recording(record, inputs, output_shapes):
        if record.name == "step":
            records.append({k: v.numpy().copy() for k, v in inputs.items()})
        return execute(record, inputs, output_shapes)

    components._execute = recording
    settings = with_overrides(model_render_settings(default_model_dir()), overlap=False)
    with tempfile.TemporaryDirectory() as scratch:
        for clip in clips:
            frame = read_video(clip)[0][0]
            Image.fromarray(frame).save(Path(scratch) / "ref.png")
            inputs = load_inputs(Path(scratch) / "ref.png", clip.with_suffix(".wav"), pipeline.config.resolution,
                                 pipeline.config.fps, no_crop=True)
            for _ in pipeline(inputs.reference, inputs.waveform, settings):
                pass
    components._execute = execute
    return records


def timed(request, feeds, rounds):
    times = []
    for _ in range(rounds):
        for feed in feeds:
            started = time.perf_counter()
            request.infer(feed)
            times.append(time.perf_counter() - started)
    return 1e3 * min(times), 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("engines")
    parser.add_argument("clips", help="a corpus's clips/ folder")
    parser.add_argument("--calibration", type=int, default=6)
    parser.add_argument("--held-out", type=int, default=2)
    parser.add_argument("--preset", default="mixed", choices=["mixed", "performance"])
    parser.add_argument("--transformer", action="store_true", help="nncf.ModelType.TRANSFORMER")
    args = parser.parse_args()
    import nncf

    torch.set_num_threads(2)
    model_dir = default_model_dir()
    components = load_components("openvino", model_dir, args.engines, "fp32")
    pipeline = EmoPipeline.from_pretrained(model_dir)
    pipeline.components = components
    clips = sorted(Path(args.clips).glob("c*.mp4"))
    calibration = recorded_step_inputs(components, pipeline, clips[: args.calibration])
    held_out = recorded_step_inputs(components, pipeline, clips[-args.held_out:])
    print(f"{len(calibration)} calibration passes, {len(held_out)} held out")

    core = ov.Core()
    path = str(components.records["step"].path)
    shapes = {k: list(v.shape) for k, v in calibration[0].items()}

    def fixed():
        model = core.read_model(path)
        model.reshape(shapes)
        return model

    started = time.perf_counter()
    quantized = nncf.quantize(fixed(), nncf.Dataset(calibration), subset_size=len(calibration),
                              preset=nncf.QuantizationPreset.MIXED if args.preset == "mixed"
                              else nncf.QuantizationPreset.PERFORMANCE,
                              model_type=nncf.ModelType.TRANSFORMER if args.transformer else None)
    print(f"quantised in {time.perf_counter() - started:.0f} s")
    variants = {"fp32": (fixed(), "f32"), "bf16": (fixed(), "bf16"), "int8": (quantized, "f32"),
                "int8+bf16": (quantized, "bf16")}
    requests = {name: core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT":
                                                         "LATENCY"}).create_infer_request()
                for name, (model, hint) in variants.items()}
    feeds = held_out[:: max(1, len(held_out) // 16)]
    reference = [requests["fp32"].infer(feed)[0].copy() for feed in feeds]
    for name, request in requests.items():
        outputs = [request.infer(feed)[0] for feed in feeds]
        error = np.sqrt(sum(np.mean((o - r) ** 2) for o, r in zip(outputs, reference)) /
                        sum(np.mean(r ** 2) for r in reference))
        print(f"{name:10s} ms per pass (fastest, median) {timed(request, feeds, 3)}  relative RMS error {error:.4f}")


if __name__ == "__main__":
    main()
