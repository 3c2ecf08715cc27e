"""ONNX export details the builds rely on: external data, the interface check, the opset, folding."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch

from emo_rt.config import tiny
from emo_rt.export.onnx_export import OPSET, export_onnx
from emo_rt.export.specs import export_specs
from emo_rt.export.tensorrt_build import unsupported_ops


def run(path, spec, inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: x.numpy() for name, x in zip(spec.input_names, inputs)})


def test_external_data_round_trip(tiny_model_fp32, tmp_path):
    """The >2 GiB path (weights in <name>.onnx.data), forced on a small network."""
    spec = export_specs(tiny_model_fp32.config)["speed_encoder"]
    inline = export_onnx(spec, tiny_model_fp32, tmp_path / "inline.onnx")
    external = export_onnx(spec, tiny_model_fp32, tmp_path / "external.onnx", external_data=True)
    assert inline.files == [tmp_path / "inline.onnx"]
    assert external.files == [tmp_path / "external.onnx", tmp_path / "external.onnx.data"]
    weights = sum(p.numel() * 4 for p in tiny_model_fp32.speed_encoder.parameters())
    assert external.files[1].stat().st_size > 0.9 * weights  # tensors of a few bytes stay in the graph
    assert inline.folded and not external.folded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["external.onnx", "external.onnx.data", "inline.onnx"]
    inputs = spec.sample_inputs()
    (a,), (b,) = run(inline.path, spec, inputs), run(external.path, spec, inputs)
    assert (a == b).all()


def test_built_graphs_are_opset_18_with_the_spec_interface_and_parser_ops(ort_engines):
    engine_dir, report = ort_engines
    specs = export_specs(tiny())
    for engine in report.engines:
        graph = onnx.load(str(engine.path))
        spec = specs[engine.name]
        assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
        dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.graph.input}
        assert dims == {t.name: list(t.shape) for t in spec.inputs}, engine.name
        assert [v.name for v in graph.graph.output] == spec.output_names
        assert unsupported_ops(graph) == {}, engine.name


def test_a_model_in_the_wrong_dtype_is_refused(tiny_model_fp32, tmp_path):
    spec = export_specs(tiny_model_fp32.config)["face_locator"]
    with pytest.raises(ValueError, match="precision fp16 needs torch.float16"):
        export_onnx(spec, tiny_model_fp32, tmp_path / "x.onnx", precision="fp16")
    assert not any(tmp_path.iterdir()), "nothing is left behind"
    assert torch.float32 == next(tiny_model_fp32.parameters()).dtype
