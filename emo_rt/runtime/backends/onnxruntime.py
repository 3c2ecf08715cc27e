"""OrtComponents: the Components interface on onnxruntime sessions, one per sub-network.

Providers: CUDA (then CPU) when onnxruntime-gpu is installed, CPU otherwise; TensorRT's provider
only when asked for. onnxruntime silently falls back to CPU when a GPU provider cannot load, so
the providers each session actually uses are read back (`providers`, and in `name`) and a
fallback is warned about. Tensors are bound in place (IOBinding on torch memory): no copies on CPU,
and on CUDA inputs and outputs stay on the GPU.

On CUDA, onnxruntime computes on a stream of its own, which knows nothing of torch's: before a run
torch's current stream is synchronised, so the inputs torch has just written are complete and the
output memory `torch.empty` hands out is no longer written by earlier torch work; onnxruntime
synchronises its own stream at the end of a run (run option "disable_synchronize_execution_providers"
defaults to "0"), so the outputs are complete when `run` returns.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from emo_rt.config import EmoConfig
from emo_rt.runtime.backends.base import EngineComponents
from emo_rt.runtime.backends.manifest import ENGINE_NAMES, EngineRecord, read_engines

BACKEND = "onnxruntime"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
NP_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}


def default_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OrtComponents(EngineComponents):
    def __init__(self, config: EmoConfig, records: dict[str, EngineRecord], providers: list[str] | None = None,
                 threads: int | None = None):
        import onnxruntime as ort

        requested = list(providers) if providers is not None else default_providers()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: the optimiser's notes are not the user's business
        if threads is not None:
            options.intra_op_num_threads = threads
        self.sessions = {name: ort.InferenceSession(str(record.path), options, providers=requested)
                         for name, record in records.items()}
        self.providers = {name: s.get_providers() for name, s in self.sessions.items()}
        used = sorted({p[0] for p in self.providers.values()})
        fell_back = [n for n, p in self.providers.items() if p[0] != requested[0]]
        if fell_back:
            warnings.warn(f"onnxruntime runs {', '.join(fell_back)} on {self.providers[fell_back[0]][0]}: "
                          f"{requested[0]} was requested but could not be used", stacklevel=2)
        on_gpu = used[0] in GPU_PROVIDERS and len(used) == 1 and torch.cuda.is_available()
        super().__init__(config, records, torch.device("cuda", 0) if on_gpu else torch.device("cpu"))
        self.name = f"{BACKEND}[{','.join(used)}]"

    @classmethod
    def load(cls, model_dir: str | Path, engine_dir: str | Path, precision: str = "fp32",
             providers: list[str] | None = None, threads: int | None = None) -> "OrtComponents":
        """Sessions for every engine in `engine_dir`, after checking them against `model_dir`."""
        import onnxruntime as ort

        config = EmoConfig.load(model_dir)
        # ONNX files are portable: neither onnxruntime's version nor the device is checked
        records = read_engines(engine_dir, model_dir, BACKEND, precision, ort.__version__, device="any",
                               names=ENGINE_NAMES)
        return cls(config, records, providers, threads)

    def _execute(self, record, inputs, output_shapes):
        outputs = {info.name: (output_shapes[info.name], getattr(torch, info.dtype)) for info in record.outputs}
        return run_bound(self.sessions[record.name], inputs, outputs, self.device)


def run_bound(session, inputs: dict[str, torch.Tensor], outputs: dict[str, tuple[tuple[int, ...], torch.dtype]],
              device: torch.device) -> list[torch.Tensor]:
    """Run `session` on contiguous torch tensors bound in place, into new tensors of the given
    (shape, dtype) per output name, all on `device`; returns the outputs in the given order."""
    binding = session.io_binding()
    kind, index = device.type, device.index or 0
    for name, x in inputs.items():
        binding.bind_input(name, kind, index, NP_DTYPES[x.dtype], tuple(x.shape), x.data_ptr())
    results = []
    for name, (shape, dtype) in outputs.items():
        out = torch.empty(shape, dtype=dtype, device=device)
        binding.bind_output(name, kind, index, NP_DTYPES[dtype], tuple(shape), out.data_ptr())
        results.append(out)
    if device.type == "cuda":  # see the module docstring: onnxruntime's stream does not wait on torch's
        torch.cuda.current_stream(device).synchronize()
    session.run_with_iobinding(binding)
    return results
