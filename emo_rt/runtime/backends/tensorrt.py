"""TrtComponents: the Components interface on TensorRT 10 engines (`tensorrt` imported lazily).

Per engine: one execution context; device buffers for every input and output allocated once, at
the largest shape its profile allows, with their addresses set once; a call copies inputs into
the buffers' leading elements, sets the input shapes, enqueues on torch's current stream and
returns copies of the outputs (the buffers are reused by the next call). The step network has
static shapes per guidance batch, so after one warm-up call per batch size it is captured as a
CUDA graph and replayed: one launch per denoising step instead of hundreds of kernels.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from emo_rt.config import EmoConfig
from emo_rt.errors import EmoError
from emo_rt.runtime.backends.base import EngineComponents
from emo_rt.runtime.backends.manifest import ENGINE_NAMES, EngineRecord, read_engines

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


class TrtEngine:
    """One deserialised engine with its context and its preallocated device buffers."""

    def __init__(self, trt, runtime, record: EngineRecord, device: torch.device, use_graphs: bool):
        self.record = record
        self.engine = runtime.deserialize_cuda_engine(Path(record.path).read_bytes())
        if self.engine is None:
            raise EmoError(f"TensorRT could not load {record.path}: rebuild it with `emo-rt build-engines`")
        self.context = self.engine.create_execution_context()
        self.use_graphs = use_graphs
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        max_sizes = {name: dim["max"] for name, dim in record.dims.items()}
        self.buffers: dict[str, torch.Tensor] = {}
        torch_dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                        trt.int32: torch.int32, trt.int64: torch.int64, trt.bool: torch.bool}
        for info in (*record.inputs, *record.outputs):
            dtype = torch_dtypes[self.engine.get_tensor_dtype(info.name)]
            shape = tuple(max_sizes[d] if isinstance(d, str) else d for d in info.shape)
            self.buffers[info.name] = torch.empty(math.prod(shape), dtype=dtype, device=device)
            self.context.set_tensor_address(info.name, self.buffers[info.name].data_ptr())

    def __call__(self, inputs: dict[str, torch.Tensor],
                 output_shapes: dict[str, tuple[int, ...]]) -> list[torch.Tensor]:
        signature = tuple(tuple(x.shape) for x in inputs.values())
        for name, x in inputs.items():
            self.buffers[name][: x.numel()].view(x.shape).copy_(x)
            self.context.set_input_shape(name, tuple(x.shape))
        stream = torch.cuda.current_stream()
        graph = self.graphs.get(signature)
        if graph is not None:
            graph.replay()
        else:
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EmoError(f"TensorRT failed to run the {self.record.name} engine")
            if self.use_graphs:  # this shape has run once (TensorRT's deferred setup is done): capture
                self.graphs[signature] = self._capture()
        outputs = []
        for info in self.record.outputs:
            shape = tuple(self.context.get_tensor_shape(info.name))
            if shape != output_shapes[info.name]:
                raise EmoError(f"{self.record.name} engine: {info.name} came out {shape}, expected "
                               f"{output_shapes[info.name]}")
            outputs.append(self.buffers[info.name][: math.prod(shape)].view(shape).clone())
        return outputs

    def _capture(self) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        capture_stream = torch.cuda.Stream()
        capture_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.graph(graph, stream=capture_stream):
            if not self.context.execute_async_v3(capture_stream.cuda_stream):
                raise EmoError(f"TensorRT failed to capture the {self.record.name} engine in a CUDA graph")
        torch.cuda.current_stream().wait_stream(capture_stream)
        return graph


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
