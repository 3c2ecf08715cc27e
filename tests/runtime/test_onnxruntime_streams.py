"""onnxruntime's CUDA provider runs on a stream of its own: `run_bound` must order it after torch's
current stream, both for inputs torch has just written and for output memory that earlier torch
work still writes. On CPU a recording stub checks the order of the calls (sync, then run); on CUDA +
onnxruntime-gpu each case puts a ~1 s busy kernel on torch's stream before that work, so an
unordered run would read (or be overwritten by) it."""

from __future__ import annotations

import pytest
import torch

from emo_rt.runtime.backends.onnxruntime import run_bound

try:
    import onnxruntime as ort
except ImportError:
    ort = None

needs_ort_cuda = pytest.mark.skipif(
    ort is None or not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs a CUDA device and onnxruntime-gpu (CUDAExecutionProvider); the CPU provider shares torch's "
           "host memory and has no stream to order")


class RecordingSession:
    """Stands in for an InferenceSession: its binding and run append to a shared event list."""

    def __init__(self, events: list):
        self.events = events

    def io_binding(self):
        events = self.events

        class Binding:
            def bind_input(self, name, kind, index, dtype, shape, ptr):
                events.append(("bind_input", name, kind, index))

            def bind_output(self, name, kind, index, dtype, shape, ptr):
                events.append(("bind_output", name, kind, index))

        return Binding()

    def run_with_iobinding(self, binding):
        self.events.append(("run",))


def recording_cuda(monkeypatch, events: list) -> None:
    """torch.cuda.current_stream and torch.empty as recorders that run on a CPU-only machine."""
    real_empty = torch.empty

    class Stream:
        def __init__(self, device):
            self.device = device

        def synchronize(self):
            events.append(("sync", str(self.device)))

    def empty(shape, dtype, device):
        events.append(("empty", str(device)))
        return real_empty(shape, dtype=dtype)  # CPU memory: only the pointer is bound

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream(device))
    monkeypatch.setattr(torch, "empty", empty)


def test_on_cuda_torch_stream_is_synchronised_before_the_run(monkeypatch):
    """Without the sync (or with it after the run) onnxruntime's stream races torch's."""
    events: list = []
    recording_cuda(monkeypatch, events)
    device = torch.device("cuda", 0)
    (y,) = run_bound(RecordingSession(events), {"x": torch.zeros(4)}, {"y": ((4,), torch.float32)}, device)
    assert y.shape == (4,)
    kinds = [e[0] for e in events]
    assert kinds.count("sync") == 1 and kinds.count("run") == 1, events
    assert ("sync", "cuda:0") in events  # the current stream of the device the tensors live on
    assert kinds.index("sync") < kinds.index("run"), events
    assert ("bind_input", "x", "cuda", 0) in events and ("bind_output", "y", "cuda", 0) in events


def test_on_cpu_nothing_is_synchronised(monkeypatch):
    events: list = []
    recording_cuda(monkeypatch, events)
    run_bound(RecordingSession(events), {"x": torch.zeros(4)}, {"y": ((4,), torch.float32)}, torch.device("cpu"))
    assert [e[0] for e in events] == ["bind_input", "empty", "bind_output", "run"]


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


@needs_ort_cuda
def test_inputs_written_by_torch_are_complete_before_onnxruntime_reads_them(tmp_path):
    session, device = add_one_session(tmp_path), torch.device("cuda", 0)
    x = torch.zeros(N, device=device)
    torch.cuda._sleep(2_000_000_000)
    x.fill_(2.0)  # lands ~1 s later on torch's stream
    (y,) = run_bound(session, {"x": x}, {"y": ((N,), torch.float32)}, device)
    assert y.min().item() == y.max().item() == 3.0


@needs_ort_cuda
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
