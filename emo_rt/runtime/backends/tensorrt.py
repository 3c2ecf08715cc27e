"""TrtComponents: the Components interface on TensorRT 10 engines (`tensorrt` imported lazily).

Per engine: device buffers for every input and output allocated once, at the largest shape its
profile allows, and shared by the engine's execution contexts (each has their addresses set once);
a call copies inputs into the buffers' leading elements, runs on torch's current stream and
returns copies of the outputs (the buffers are reused by the next call). The step network has
static shapes per guidance batch, so it is replayed as a CUDA graph per input shape, each graph
with an execution context of its own: a shape change alters a context's internal state (TensorRT
completes it in the first enqueue after `set_input_shape`), which a graph captured on that context
would replay stale. Capture runs in thread-local mode from whichever thread calls (the overlap
worker) and falls back to plain execution, with one warning, where it fails
(emo_rt.runtime.cuda_graph).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from emo_rt.config import EmoConfig
from emo_rt.errors import EmoError
from emo_rt.runtime.backends.base import EngineComponents
from emo_rt.runtime.backends.manifest import ENGINE_NAMES, EngineRecord, read_engines
from emo_rt.runtime.cuda_graph import Capture, GraphCache, capture_cuda_graph

BACKEND = "tensorrt"
GRAPHED = ("step",)  # engines replayed as CUDA graphs (one per input shape)


def _require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise EmoError("--backend tensorrt needs the tensorrt package (pip install 'emo-rt[gpu]') and "
                       "an NVIDIA GPU; use --backend onnxruntime or torch here") from None
    if not torch.cuda.is_available():
        raise EmoError("--backend tensorrt needs a CUDA device, and torch sees none")
    return trt


def cuda_device_name(index: int = 0) -> str:
    """The device string the builder records (export/tensorrt_build.cuda_device_name)."""
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})"


Signature = tuple[tuple[str, tuple[int, ...]], ...]  # (input name, shape) per input, in order


class TrtEngine:
    """One deserialised engine, its preallocated device buffers and its execution contexts: one
    for plain execution, and one per captured input shape (`graphs`; each context holds its own
    activation memory, so the step engine keeps two: guidance batch 1 and 2)."""

    def __init__(self, trt, runtime, record: EngineRecord, device: torch.device, use_graphs: bool,
                 capture: Capture = capture_cuda_graph):
        self.record = record
        self.device = device
        self.engine = runtime.deserialize_cuda_engine(Path(record.path).read_bytes())
        if self.engine is None:
            raise EmoError(f"TensorRT could not load {record.path}: rebuild it with `emo-rt build-engines`")
        max_sizes = {name: dim["max"] for name, dim in record.dims.items()}
        self.buffers: dict[str, torch.Tensor] = {}
        torch_dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                        trt.int32: torch.int32, trt.int64: torch.int64, trt.bool: torch.bool}
        for info in (*record.inputs, *record.outputs):
            dtype = torch_dtypes[self.engine.get_tensor_dtype(info.name)]
            shape = tuple(max_sizes[d] if isinstance(d, str) else d for d in info.shape)
            self.buffers[info.name] = torch.empty(math.prod(shape), dtype=dtype, device=device)
        self.graphs: GraphCache[None] | None = (
            GraphCache(f"TensorRT {record.name} engine", capture) if use_graphs else None)
        self._graph_contexts: dict[Signature, object] = {}  # the context each graph was captured on
        self._eager_context = None  # created on first use: a graphed engine may never need it

    def __call__(self, inputs: dict[str, torch.Tensor],
                 output_shapes: dict[str, tuple[int, ...]]) -> list[torch.Tensor]:
        signature: Signature = tuple((name, tuple(x.shape)) for name, x in inputs.items())
        for name, x in inputs.items():
            self.buffers[name][: x.numel()].view(x.shape).copy_(x)
        context = self._run(signature, inputs)
        outputs = []
        for info in self.record.outputs:
            shape = tuple(context.get_tensor_shape(info.name))
            if shape != output_shapes[info.name]:
                raise EmoError(f"{self.record.name} engine: {info.name} came out {shape}, expected "
                               f"{output_shapes[info.name]}")
            outputs.append(self.buffers[info.name][: math.prod(shape)].view(shape).clone())
        return outputs

    def _run(self, signature: Signature, inputs: dict[str, torch.Tensor]):
        """Run on the current stream: replay `signature`'s graph, or capture one (on a context of
        its own, after one plain run that also gives this call's outputs), or run plainly. Returns
        the context whose shapes describe the outputs."""
        if self.graphs is not None and not self.graphs.failed(signature):
            captured = self.graphs.get(signature)
            if captured is not None:
                captured.replay()
                return self._graph_contexts[signature]
            context = self._new_context()
            self._set_shapes(context, inputs)
            self._enqueue(context)  # completes the context's per-shape set-up outside the capture
            if self.graphs.capture(signature, lambda: self._enqueue(context)) is not None:
                self._graph_contexts[signature] = context
            return context
        if self._eager_context is None:
            self._eager_context = self._new_context()
        self._set_shapes(self._eager_context, inputs)
        self._enqueue(self._eager_context)
        return self._eager_context

    def _new_context(self):
        context = self.engine.create_execution_context()
        if context is None:
            raise EmoError(f"TensorRT could not create an execution context for the {self.record.name} "
                           "engine (out of GPU memory?)")
        for name, buffer in self.buffers.items():
            context.set_tensor_address(name, buffer.data_ptr())
        return context

    def _set_shapes(self, context, inputs: dict[str, torch.Tensor]) -> None:
        for name, x in inputs.items():
            if not context.set_input_shape(name, tuple(x.shape)):
                raise EmoError(f"{self.record.name} engine: TensorRT refused input {name} of shape "
                               f"{tuple(x.shape)}")

    def _stream_handle(self) -> int:
        """torch's current stream on this thread (the capture stream while capturing)."""
        return torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0

    def _enqueue(self, context) -> None:
        if not context.execute_async_v3(self._stream_handle()):
            raise EmoError(f"TensorRT failed to run the {self.record.name} engine")


class TrtComponents(EngineComponents):
    def __init__(self, config: EmoConfig, records: dict[str, EngineRecord], cuda_graphs: bool = True):
        trt = _require_tensorrt()
        device = torch.device("cuda", torch.cuda.current_device())
        super().__init__(config, records, device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engines = {name: TrtEngine(trt, self.runtime, record, device,
                                        use_graphs=cuda_graphs and name in GRAPHED)
                        for name, record in records.items()}
        self.name = f"{BACKEND}[{cuda_device_name()}]" + ("+cuda-graph" if cuda_graphs else "")

    @classmethod
    def load(cls, model_dir: str | Path, engine_dir: str | Path, precision: str = "fp16",
             cuda_graphs: bool = True) -> "TrtComponents":
        """Engines of `engine_dir`, checked against `model_dir`, this TensorRT version and this GPU."""
        trt = _require_tensorrt()
        records = read_engines(engine_dir, model_dir, BACKEND, precision, trt.__version__,
                               device=cuda_device_name(), names=ENGINE_NAMES)
        return cls(EmoConfig.load(model_dir), records, cuda_graphs)

    def _execute(self, record, inputs, output_shapes):
        return self.engines[record.name](inputs, output_shapes)
