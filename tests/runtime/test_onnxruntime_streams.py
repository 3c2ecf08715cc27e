"""onnxruntime's CUDA provider runs on a stream of its own: `run_bound` must order it after torch's
current stream, both for inputs torch has just written and for output memory that earlier torch
work still writes. Each case puts a ~1 s busy kernel on torch's stream before that work, so an
unordered run would read (or be overwritten by) it. CUDA + onnxruntime-gpu only."""

from __future__ import annotations

import pytest
import torch

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip("needs a CUDA device and onnxruntime-gpu (CUDAExecutionProvider); the CPU provider "
                "shares torch's host memory and has no stream to order", allow_module_level=True)

from emo_rt.runtime.backends.onnxruntime import run_bound  # noqa: E402

N = 1 << 22


def add_one_session(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "add_one",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N])], [one])
    path = tmp_path / "add_one.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    return session


def test_inputs_written_by_torch_are_complete_before_onnxruntime_reads_them(tmp_path):
    session, device = add_one_session(tmp_path), torch.device("cuda", 0)
    x = torch.zeros(N, device=device)
    torch.cuda._sleep(2_000_000_000)
    x.fill_(2.0)  # lands ~1 s later on torch's stream
    (y,) = run_bound(session, {"x": x}, {"y": ((N,), torch.float32)}, device)
    assert y.min().item() == y.max().item() == 3.0


def test_output_memory_is_no_longer_written_by_earlier_torch_work(tmp_path):
    session, device = add_one_session(tmp_path), torch.device("cuda", 0)
    x = torch.full((N,), 2.0, device=device)
    torch.cuda.synchronize()
    scratch = torch.empty(N, device=device)
    torch.cuda._sleep(2_000_000_000)
    scratch.fill_(7.0)  # pending on torch's stream when the block is freed...
    del scratch  # ...and handed out again at once for the output (same stream, same size)
    (y,) = run_bound(session, {"x": x}, {"y": ((N,), torch.float32)}, device)
    torch.cuda.synchronize()
    assert y.min().item() == y.max().item() == 3.0
