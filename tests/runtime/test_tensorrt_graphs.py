"""TrtEngine's CUDA-graph handling, on CPU, through a stub TensorRT engine that behaves like the real
one where it matters: an execution context keeps shape-dependent state in device memory, written
by the first enqueue after `set_input_shape` (TensorRT's documented sequence: set shapes, enqueue
once, then capture); a captured graph replays the kernels only, reading memory as it is at replay.
So a graph captured on a context whose shapes later change replays with the new state, which is
the defect of one context serving graphs of several shapes. The runs alternate batch 1 and 2
through replays; capture failures fall back to plain execution with one warning.

The stub device records kernels while a capture is active, the way CUDA stream capture does; the
real capture (torch.cuda.graph, thread-local mode) is tested on CUDA in test_cuda_graph.py.
"""

from __future__ import annotations

import ctypes
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from emo_rt.runtime.backends.manifest import EngineRecord, TensorInfo
from emo_rt.runtime.backends.tensorrt import TrtEngine

WIDTH = 3
STUB_TRT = SimpleNamespace(float32="float32", float16="float16", bfloat16="bfloat16", int32="int32",
                           int64="int64", bool="bool")


def memory(address: int, numel: int) -> torch.Tensor:
    """The float32 tensor at a buffer address (the stub's view of device memory)."""
    return torch.frombuffer((ctypes.c_float * numel).from_address(address), dtype=torch.float32)


class StubDevice:
    """Runs kernels as they are launched, or records them while a capture is active; a replay runs
    the recorded kernels. `capture` has the contract of emo_rt.runtime.cuda_graph.Capture."""

    def __init__(self, fail_capture: bool = False):
        self.recording: list | None = None
        self.fail_capture = fail_capture
        self.captures = self.replays = self.kernels_run = 0

    def launch(self, kernel) -> None:
        if self.recording is not None:
            self.recording.append(kernel)
        else:
            kernel()
            self.kernels_run += 1

    def capture(self, launch):
        self.captures += 1
        self.recording = []
        try:
            result = launch()
            if self.fail_capture:
                raise RuntimeError("operation not permitted when stream is capturing")
        finally:
            kernels, self.recording = self.recording, None

        def replay() -> None:
            self.replays += 1
            for kernel in kernels:
                kernel()
                self.kernels_run += 1

        return replay, result


class StubContext:
    """y = x * rows, where `rows` is the batch the context was last enqueued with: kept in the
    context's device memory (a stand-in for TensorRT's shape-dependent state) and read by the
    kernel when it runs."""

    def __init__(self, device: StubDevice, max_rows: int):
        self.device, self.max_rows = device, max_rows
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.state = torch.zeros(1)  # "device memory" of the context

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return 1 <= shape[0] <= self.max_rows and shape[1:] == (WIDTH,)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes["x"]

    def execute_async_v3(self, stream: int) -> bool:
        self.state[0] = self.shapes["x"][0]  # set-up at enqueue: host side, not part of a graph
        x = memory(self.addresses["x"], self.max_rows * WIDTH)
        y = memory(self.addresses["y"], self.max_rows * WIDTH)
        state = self.state

        def kernel() -> None:
            rows = int(state[0])
            y[: rows * WIDTH] = x[: rows * WIDTH] * rows

        self.device.launch(kernel)
        return True


class StubEngine:
    def __init__(self, device: StubDevice, max_rows: int):
        self.device, self.max_rows = device, max_rows
        self.contexts: list[StubContext] = []

    def get_tensor_dtype(self, name: str) -> str:
        return STUB_TRT.float32

    def create_execution_context(self) -> StubContext:
        self.contexts.append(StubContext(self.device, self.max_rows))
        return self.contexts[-1]


class StubRuntime:
    def __init__(self, device: StubDevice):
        self.device = device

    def deserialize_cuda_engine(self, plan: bytes) -> StubEngine:
        assert plan == b"stub plan"
        return StubEngine(self.device, max_rows=2)


def make_engine(tmp_path: Path, use_graphs: bool = True, fail_capture: bool = False) -> tuple[TrtEngine, StubDevice]:
    plan = tmp_path / "step.plan"
    plan.write_bytes(b"stub plan")
    record = EngineRecord(name="step", path=plan, precision="fp32",
                          inputs=(TensorInfo("x", ("batch", WIDTH), "float32"),),
                          outputs=(TensorInfo("y", ("batch", WIDTH), "float32"),),
                          dims={"batch": {"min": 1, "opt": 2, "max": 2}}, fixed_shape=False)
    device = StubDevice(fail_capture)
    engine = TrtEngine(STUB_TRT, StubRuntime(device), record, torch.device("cpu"), use_graphs,
                       capture=device.capture)
    return engine, device


BATCHES = [1, 1, 2, 2, 1, 2, 1, 1, 2]  # the GPU test's 1, 1, 2, 2 and then switches between replays


def run_all(engine: TrtEngine) -> None:
    for call, rows in enumerate(BATCHES):
        x = torch.arange(rows * WIDTH, dtype=torch.float32).reshape(rows, WIDTH) + 10 * call
        (y,) = engine({"x": x}, {"y": (rows, WIDTH)})
        torch.testing.assert_close(y, x * rows, rtol=0, atol=0, msg=f"call {call} (batch {rows})")


def test_replays_alternate_between_batch_sizes_with_one_context_per_graph(tmp_path):
    engine, device = make_engine(tmp_path)
    run_all(engine)
    assert device.captures == 2 and len(engine.graphs) == 2  # one graph per batch size
    assert device.replays == len(BATCHES) - 2  # every call after the first of its shape replays
    contexts = engine.engine.contexts
    assert len(contexts) == 2 and contexts[0] is not contexts[1]  # and no shared eager context


def test_the_former_single_context_design_fails_this_check(tmp_path):
    """Control: capturing both batch sizes on one context (what TrtEngine did) gives batch 1 the
    batch-2 state on its next replay, so the check above can fail."""
    engine, device = make_engine(tmp_path)
    context = engine._new_context()
    graphs = {}
    wrong = False
    for rows in BATCHES:
        x = torch.ones(rows, WIDTH)
        engine.buffers["x"][: x.numel()].copy_(x.reshape(-1))
        context.set_input_shape("x", (rows, WIDTH))
        if rows in graphs:
            graphs[rows]()
        else:
            engine._enqueue(context)
            graphs[rows], _ = device.capture(lambda: engine._enqueue(context))
        y = engine.buffers["y"][: rows * WIDTH]
        wrong |= not torch.equal(y, torch.full_like(y, float(rows)))
    assert wrong


def test_a_failed_capture_runs_that_shape_plainly_and_warns_once(tmp_path):
    engine, device = make_engine(tmp_path, fail_capture=True)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed") as caught:
        run_all(engine)
    assert len(caught) == 2  # once per batch size, never retried
    assert device.captures == 2 and device.replays == 0 and len(engine.graphs) == 0
    assert engine.graphs.failed((("x", (1, WIDTH)),)) and engine.graphs.failed((("x", (2, WIDTH)),))


def test_without_graphs_one_context_runs_every_shape(tmp_path):
    engine, device = make_engine(tmp_path, use_graphs=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_all(engine)
    assert device.captures == 0 and len(engine.engine.contexts) == 1
    assert device.kernels_run == len(BATCHES)
