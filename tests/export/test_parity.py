"""onnxruntime vs torch, per sub-network, on fresh random inputs at dynamic sizes other than the
ones the export traced (batch 1 of the guidance pair, other audio lengths, other image counts).

Tolerance, per output: the engine's max relative error against torch in fp64 must be at most 4x
that of torch's own fp32 forward against fp64, plus 1e-6 (export_helpers.check_engine_outputs
says why). Measured on the tiny model, worst output per case: the engine's error is 0.26x-1.9x
torch's (2e-7..4e-6); against torch fp32 it is at most 1.6e-5 (the VAE decoder).
"""

from __future__ import annotations

import pytest
import torch
from export_helpers import PARITY_CASES, THREADS, case_id, check_engine_outputs, relative_error

from emo_rt.config import EmoConfig
from emo_rt.export.specs import export_specs


@pytest.fixture(scope="module")
def ort_components(tiny_model_dir, ort_engines):
    from emo_rt.runtime.backends import load_components

    return load_components("onnxruntime", tiny_model_dir, ort_engines[0], threads=THREADS)


def test_sessions_report_the_provider_they_run_on(ort_components):
    assert set(ort_components.providers) == set(export_specs(ort_components.config))
    assert all(p[0] == "CPUExecutionProvider" for p in ort_components.providers.values())
    assert ort_components.name == "onnxruntime[CPUExecutionProvider]"


@pytest.mark.filterwarnings("ignore:Specified provider")  # onnxruntime's own note, printed to stderr
def test_a_provider_fallback_is_reported_not_silent(tiny_model_dir, ort_engines):
    """onnxruntime quietly runs on CPU when a requested GPU provider cannot load: the components
    say where they really run, and warn."""
    from emo_rt.runtime.backends.manifest import read_engines
    from emo_rt.runtime.backends.onnxruntime import OrtComponents

    records = read_engines(ort_engines[0], tiny_model_dir, "onnxruntime", "fp32", "any", "any",
                           names=("face_locator",))
    config = EmoConfig.load(tiny_model_dir)
    with pytest.warns(UserWarning, match="runs face_locator on CPUExecutionProvider: CUDAExecutionProvider was"):
        components = OrtComponents(config, records, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert components.providers == {"face_locator": ["CPUExecutionProvider"]}
    assert components.name == "onnxruntime[CPUExecutionProvider]"
    assert components.device.type == "cpu"


@pytest.mark.parametrize("name,sizes", PARITY_CASES, ids=[case_id(*c) for c in PARITY_CASES])
def test_onnxruntime_matches_torch(name, sizes, ort_components, tiny_model_fp32, tiny_model_fp64):
    spec = export_specs(tiny_model_fp32.config)[name]
    generator = torch.Generator().manual_seed(sum(map(ord, name)) + sum(sizes.values()))
    inputs = spec.sample_inputs(generator=generator, **sizes)
    outputs = ort_components.run(name, **dict(zip(spec.input_names, inputs)))
    check_engine_outputs(spec, outputs, inputs, tiny_model_fp32, tiny_model_fp64, sizes)


FP16_ENGINES = ("face_locator", "audio_projector", "vae_decoder")


def test_fp16_engines_match_torch_fp16(tiny_model_dir, tiny_model_fp64, ort_engines):
    """fp16 variants (exported from the fp16 model, fp16 inputs and outputs), built into the same
    directory as the fp32 engines: their error against fp64 is at most 2x that of torch's own fp16
    forward, plus 1e-4 (a tenth of fp16's epsilon: onnxruntime's CPU provider runs some fp16 ops
    in fp32, so it may be more accurate, never much less). The other engines' fp16 exports cost
    minutes of CPU; these three cover
    convolutions, GroupNorm, attention (the VAE's mid block), linear layers and LayerNorm."""
    from emo_rt.export import build_engines
    from emo_rt.models import EmoModel
    from emo_rt.runtime.backends.manifest import read_engines
    from emo_rt.runtime.backends.onnxruntime import OrtComponents

    engine_dir = ort_engines[0]
    build_engines(tiny_model_dir, "onnxruntime", "fp16", engine_dir, progress=False, names=FP16_ENGINES)
    records = read_engines(engine_dir, tiny_model_dir, "onnxruntime", "fp16", "any", "any", names=FP16_ENGINES)
    fp16 = EmoModel.from_pretrained(tiny_model_dir, dtype=torch.float16)
    components = OrtComponents(fp16.config, records, threads=THREADS)
    for name in FP16_ENGINES:
        spec = export_specs(fp16.config)[name]
        inputs = spec.sample_inputs("fp16", generator=torch.Generator().manual_seed(3))
        with torch.inference_mode():
            reference = spec.wrapper(tiny_model_fp64)(*(x.double() for x in inputs))[0]
            control = relative_error(spec.wrapper(fp16)(*inputs)[0], reference)
        (out,) = components.run(name, **dict(zip(spec.input_names, inputs)))
        assert out.dtype == torch.float16
        assert relative_error(out, reference) <= 2 * control + 1e-4, name
