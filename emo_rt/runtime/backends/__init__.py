"""Backends behind the one `Components` interface: torch (eager or torch.compile), onnxruntime and
TensorRT engines built by `emo-rt build-engines` (checked against the model through the engine
manifest), and OpenVINO, which compiles onnxruntime's fp32 ONNX set for the CPU. Entry point:
`load_components`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from emo_rt.errors import EmoError
from emo_rt.runtime.backends.manifest import StaleEngineError
from emo_rt.runtime.components import Components

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
_PRECISIONS = {torch.float32: "fp32", torch.float16: "fp16", torch.int8: "int8"}  # engine sets by dtype
_DTYPE_NAMES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
                "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "int8": torch.int8}

__all__ = ["BACKENDS", "StaleEngineError", "load_components"]


def load_components(backend: str, model_dir: str | Path, engine_dir: str | Path | None = None,
                    dtype: torch.dtype | str | None = torch.float32, **options) -> Components:
    """Components for `backend` on the model in `model_dir`.

    torch: the model itself (options: compile=True, cuda_graphs=True on CUDA). onnxruntime / tensorrt: the engines in
    `engine_dir`, refused with StaleEngineError when they do not match the model (options:
    providers=[...], threads=N for onnxruntime; cuda_graphs=False for tensorrt). dtype int8 picks
    onnxruntime's int8 engines (export/quantize.py: the VAE decoder quantised, fp32 inputs and outputs).
    openvino: onnxruntime's fp32 ONNX engines compiled for the CPU, in fp32 or (dtype bf16, where the
    CPU has it natively) bf16 (options: threads=N). dtype None: bf16 for openvino where the CPU has it
    natively (the shipped model's eval holds in it), float32 otherwise."""
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise EmoError(f"unknown dtype {dtype!r}: choose fp32 or fp16")
        dtype = _DTYPE_NAMES[dtype]
    if dtype == torch.int8 and backend != "onnxruntime":
        raise EmoError(f"int8 runs onnxruntime's int8 engines (--backend onnxruntime), not --backend {backend}")
    if backend == "openvino":
        from emo_rt.runtime.backends.openvino import OvComponents

        precisions = {None: "auto", torch.float32: "fp32", torch.bfloat16: "bf16"}
        if dtype not in precisions:
            raise EmoError(f"--backend openvino runs float32 or bfloat16, not {_PRECISIONS.get(dtype, dtype)}")
        if engine_dir is None:
            raise EmoError("--backend openvino needs --engines DIR (the ONNX set of "
                           "`emo-rt build-engines --backend onnxruntime`)")
        return OvComponents.load(model_dir, engine_dir, precisions[dtype], **options)
    dtype = torch.float32 if dtype is None else dtype
    if backend == "torch":
        from emo_rt.models import EmoModel
        from emo_rt.runtime.components import TorchComponents

        cuda_graphs = options.pop("cuda_graphs", False)
        model = EmoModel.from_pretrained(model_dir, dtype=dtype, device=options.pop("device", "cpu"))
        components = TorchComponents(model, dtype, **options)
        if cuda_graphs:  # the fixed-shape step replayed as a CUDA graph per shape (eager where capture fails)
            from emo_rt.runtime.cuda_graph import GraphedComponents

            components = GraphedComponents(components)
        return components
    if backend not in BACKENDS:
        raise EmoError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if dtype not in _PRECISIONS:
        raise EmoError(f"--backend {backend} runs fp32, fp16 or (onnxruntime) int8 engines, not {dtype}")
    if engine_dir is None:
        raise EmoError(f"--backend {backend} needs --engines DIR (built by `emo-rt build-engines --backend {backend}`)")
    if backend == "onnxruntime":
        from emo_rt.runtime.backends.onnxruntime import OrtComponents

        return OrtComponents.load(model_dir, engine_dir, _PRECISIONS[dtype], **options)
    from emo_rt.runtime.backends.tensorrt import TrtComponents

    return TrtComponents.load(model_dir, engine_dir, _PRECISIONS[dtype], **options)
