"""Helpers shared by the export tests (imported by name: pytest puts this directory on sys.path)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from emo_rt.config import tiny
from emo_rt.export.specs import export_specs

ALL_ENGINES = sorted(export_specs(tiny()))
# One thread for torch and onnxruntime alike: on a 2-core machine shared with other processes, a
# 2-thread forward waits for whichever thread was descheduled (the tiny step: 0.85 s on one thread,
# 2.5-15 s on two under load). Both backends get the same setting, so comparisons stay fair.
THREADS = 1


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """max |x - ref| / max |ref|: the error on the scale of the tensor (elementwise relative errors
    explode where the reference crosses zero)."""
    x, reference = x.double().cpu(), reference.double().cpu()
    return ((x - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def perturb_weights(model_dir: Path, part: str) -> None:
    """Change one tensor of `<part>.safetensors` slightly (same shapes: only the content differs)."""
    path = model_dir / f"{part}.safetensors"
    state = load_file(str(path))
    key = sorted(state)[0]
    state[key] = state[key] + 1e-3
    save_file(state, str(path))


# (engine, dynamic sizes): every sub-network, its dynamic axes at sizes other than the export's
# sample (batch 2, 25 audio frames, 2 images) where it has any, and the extremes of the ranges.
PARITY_CASES = [
    ("vae_encoder", {"images": 3}),
    ("vae_encoder", {"images": 1}),
    ("reference", {}),
    ("face_locator", {}),
    ("audio_encoder", {"samples": 11_200, "frames": 17}),
    ("audio_encoder", {"samples": 640, "frames": 1}),  # the shortest audio: one video frame
    ("audio_projector", {"frames": 1}),
    ("audio_projector", {"frames": 30}),
    ("speed_encoder", {"frames": 3}),
    ("speed_encoder", {"frames": 40}),
    ("motion", {}),
    ("step", {"batch": 1}),  # cfg = 1: the export traced the guidance pair
    ("step", {"batch": 2}),
    ("vae_decoder", {"images": 3}),
]


def case_id(name: str, sizes: dict[str, int]) -> str:
    return f"{name}-{'-'.join(f'{k}{v}' for k, v in sizes.items()) or 'static'}"


def check_engine_outputs(spec, outputs, inputs, model_fp32, model_fp64, sizes, factor: float = 4.0,
                         floor: float = 1e-6) -> None:
    """Engine outputs against torch on the same inputs: the shapes the spec promises, and a max
    relative error against torch's fp64 forward of at most `factor` times torch fp32's own error
    against fp64, plus `floor`. Both fp32 paths carry only rounding error, so an engine must be as
    accurate as torch up to a small factor (other summation orders, fused kernels); a wrong op, a
    baked-in shape or a lost dynamic axis gives errors of order 1. The floor (1e-6, about 8 fp32
    ulps) covers outputs torch computes almost exactly (control ~0), where any reordering shows."""
    cpu = [x.cpu() for x in inputs]
    with torch.inference_mode():
        fp32 = spec.wrapper(model_fp32)(*cpu)
        fp64 = spec.wrapper(model_fp64)(*(x.double() if x.is_floating_point() else x for x in cpu))
    expected_shapes = spec.output_shapes(**sizes)
    for out, ref32, ref64, info in zip(outputs, fp32, fp64, spec.outputs, strict=True):
        assert tuple(out.shape) == expected_shapes[info.name] == tuple(ref32.shape), info.name
        control = relative_error(ref32, ref64)
        error = relative_error(out, ref64)
        assert error <= factor * control + floor, (
            f"{spec.name}.{info.name}: engine error {error:.2e} vs fp32 torch's {control:.2e} (both against fp64)")
