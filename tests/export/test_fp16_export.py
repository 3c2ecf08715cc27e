"""All nine fp16 exports, as a TensorRT build makes them (export_onnx at fp16 + Polygraphy folding),
checked on CPU: until this test, six of them first ran inside a real TensorRT build.

Per graph: the exporter and folding ran (folding raises on any failure), the interface is the
spec's (export_onnx checks it), every op is one the TensorRT parser imports, and ONNX's strict type
inference finds no type conflict (a strongly typed TensorRT network takes the graph's types as
they are, so a mixed fp16/fp32 op would be a build error there). onnxruntime's CPU provider has
fp16 kernels for every op of the nine (1.32), so each also runs and is compared with torch fp16.
"""

from __future__ import annotations

import json
import os

import onnx
import pytest
import torch
from export_helpers import ALL_ENGINES, THREADS, relative_error

from emo_rt.config import EmoConfig
from emo_rt.export import build_engines
from emo_rt.export.onnx_export import OPSET
from emo_rt.export.specs import export_specs
from emo_rt.export.tensorrt_build import unsupported_ops

pytestmark = pytest.mark.slow  # the fp16 dynamo exports of all nine networks: minutes of CPU


@pytest.fixture(scope="module")
def fp16_engines(tiny_model_dir, tmp_path_factory, request):
    """(engine_dir, BuildReport): every tiny engine in fp16 (cached like conftest.ort_engines)."""
    cache = getattr(request.config, "cache", None)
    if cache is None or os.environ.get("EMO_RT_FRESH_ENGINES") == "1":
        out = tmp_path_factory.mktemp("engines-fp16")
    else:
        out = cache.mkdir("emo-rt-tiny-engines-fp16")
    return out, build_engines(tiny_model_dir, "onnxruntime", "fp16", out, progress=False)


def test_all_nine_fp16_exports_fold_and_type_check(fp16_engines, tiny_model_dir):
    engine_dir, report = fp16_engines
    assert sorted(e.name for e in report.engines) == ALL_ENGINES
    entries = json.loads((engine_dir / "manifest.json").read_text())["engines"]
    specs = export_specs(EmoConfig.load(tiny_model_dir))
    for engine in report.engines:
        entry = entries[f"onnxruntime/fp16/{engine.name}"]
        if engine.action == "built":  # reused entries were folded when they were built
            assert entry["tools"]["polygraphy_folded"] is True, engine.name
        graph = onnx.load(str(engine.path))
        assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
        assert unsupported_ops(graph) == {}, engine.name
        onnx.shape_inference.infer_shapes(graph, check_type=True, strict_mode=True)  # raises on a conflict
        floats = {onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
                  for v in (*graph.graph.input, *graph.graph.output)}
        spec = specs[engine.name]
        assert floats - {"int64"} == {t.dtype_for("fp16") for t in (*spec.inputs, *spec.outputs)} - {"int64"}


def test_all_nine_fp16_engines_match_torch_fp16(fp16_engines, tiny_model_dir, tiny_model_fp64):
    """Error against fp64 at most 2x that of torch's own fp16 forward, plus 1e-4 (as
    test_parity.test_fp16_engines_match_torch_fp16): onnxruntime's CPU provider computes some fp16
    ops in fp32, so it may be more accurate, never much less."""
    import onnxruntime as ort

    from emo_rt.models import EmoModel

    _, report = fp16_engines
    fp16 = EmoModel.from_pretrained(tiny_model_dir, dtype=torch.float16)
    specs = export_specs(fp16.config)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    for engine in report.engines:
        session = ort.InferenceSession(str(engine.path), options, providers=["CPUExecutionProvider"])
        spec = specs[engine.name]
        inputs = spec.sample_inputs("fp16", generator=torch.Generator().manual_seed(3))
        outputs = session.run(None, {n: x.numpy() for n, x in zip(spec.input_names, inputs)})
        with torch.inference_mode():
            reference = spec.wrapper(tiny_model_fp64)(*(x.double() if x.is_floating_point() else x
                                                        for x in inputs))
            control = spec.wrapper(fp16)(*inputs)
        for out, ref, ctl, info in zip(outputs, reference, control, spec.outputs, strict=True):
            got = torch.from_numpy(out)
            assert got.dtype == torch.float16 and tuple(got.shape) == tuple(ref.shape), (engine.name, info.name)
            error, control_error = relative_error(got, ref), relative_error(ctl, ref)
            assert error <= 2 * control_error + 1e-4, (
                f"{engine.name}.{info.name}: engine error {error:.2e} vs torch fp16's {control_error:.2e}")
