"""select_attention swaps exactly the temporal and reference processors, and back. The models live
on CUDA where there is one: select_attention refuses "triton" for a CPU model outside the
interpreter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("triton")

from emo_rt.kernels.processors import select_attention  # noqa: E402
from emo_rt.kernels.reference_attention import TritonReferenceAttnProcessor  # noqa: E402
from emo_rt.kernels.temporal_attention import TritonTemporalAttnProcessor  # noqa: E402
from emo_rt.models.attention import Attention, CrossAttnProcessor, ReferenceAttnProcessor, TemporalAttnProcessor  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _model() -> nn.Module:
    return nn.ModuleDict({
        "temporal": nn.ModuleList([Attention(32, 2, processor=TemporalAttnProcessor()) for _ in range(2)]),
        "reference": Attention(32, 2, processor=ReferenceAttnProcessor()),
        "audio": Attention(32, 2, context_dim=16, processor=CrossAttnProcessor()),
    }).to(DEVICE)


def _kinds(model: nn.Module) -> list[type]:
    return [type(m.processor) for m in model.modules() if isinstance(m, Attention)]


def test_select_triton_and_back():
    model = _model()
    assert select_attention(model, "triton") == 3
    assert _kinds(model) == [TritonTemporalAttnProcessor, TritonTemporalAttnProcessor,
                             TritonReferenceAttnProcessor, CrossAttnProcessor]
    temporal = model["temporal"]
    assert temporal[0].processor is not temporal[1].processor  # one table cache per layer
    assert select_attention(model, "triton") == 0  # idempotent
    assert select_attention(model, "sdpa") == 3
    assert _kinds(model) == [TemporalAttnProcessor, TemporalAttnProcessor, ReferenceAttnProcessor,
                             CrossAttnProcessor]


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks triton on CUDA")
def test_auto_keeps_sdpa_off_cuda():
    model = _model()
    assert select_attention(model, "auto") == 0
    assert _kinds(model)[0] is TemporalAttnProcessor


def test_unknown_kind_is_one_clear_error():
    with pytest.raises(ValueError, match="attention must be one of"):
        select_attention(_model(), "flash")


def test_swapped_layer_gives_the_same_output():
    model = _model()
    temporal = model["temporal"][0].eval()
    frames, motion, positions = (torch.randn(*shape, device=DEVICE) for shape in ((3, 7, 32), (3, 4, 32), (11, 32)))
    with torch.no_grad():
        expected = temporal(frames, motion, positions)
        select_attention(model, "triton")
        result = temporal(frames, motion, positions)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5)
