"""Select the attention implementation of a model: `select_attention(model, "triton" | "sdpa" |
"auto")` swaps the processors of every temporal and reference `Attention`, per layer.

Importing this module does not import Triton: "sdpa" (and "auto" off CUDA) work without it, and
the ONNX export keeps standard ops by selecting "sdpa".
"""

from __future__ import annotations

import importlib.util

from torch import nn

from emo_rt.errors import EmoError
from emo_rt.models.attention import Attention, ReferenceAttnProcessor, TemporalAttnProcessor

ATTENTION_KINDS = ("auto", "triton", "sdpa")


def resolve_attention(kind: str, model: nn.Module) -> str:
    """Resolve "auto": "triton" when the model's weights are on CUDA and Triton is installed,
    else "sdpa"; "triton" and "sdpa" pass through."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {kind!r}")
    if kind != "auto":
        return kind
    on_cuda = any(p.is_cuda for p in model.parameters())
    return "triton" if on_cuda and importlib.util.find_spec("triton") is not None else "sdpa"


def select_attention(model: nn.Module, kind: str = "auto") -> int:
    """Swap every TemporalAttnProcessor / ReferenceAttnProcessor of `model` for its Triton
    version ("triton"), or back ("sdpa"). Other processors are left alone; each swapped layer
    gets its own processor instance. Returns the number of layers swapped."""
    kind = resolve_attention(kind, model)
    if kind == "triton":
        from emo_rt.kernels._common import interpreting
        from emo_rt.kernels.reference_attention import TritonReferenceAttnProcessor
        from emo_rt.kernels.temporal_attention import TritonTemporalAttnProcessor
        if not interpreting() and not all(p.is_cuda for p in model.parameters()):
            raise EmoError("--attention triton needs the model on a CUDA device: "
                           "use --attention sdpa (or auto) on this device")
        swaps = {TemporalAttnProcessor: TritonTemporalAttnProcessor,
                 ReferenceAttnProcessor: TritonReferenceAttnProcessor}
    elif importlib.util.find_spec("triton") is None:
        return 0  # without Triton no Triton processor can be installed
    else:
        from emo_rt.kernels.reference_attention import TritonReferenceAttnProcessor
        from emo_rt.kernels.temporal_attention import TritonTemporalAttnProcessor
        swaps = {TritonTemporalAttnProcessor: TemporalAttnProcessor,
                 TritonReferenceAttnProcessor: ReferenceAttnProcessor}
    swapped = 0
    for module in model.modules():
        if not isinstance(module, Attention):
            continue
        for source, target in swaps.items():
            if isinstance(module.processor, source):
                module.set_processor(target())
                swapped += 1
                break
    return swapped
