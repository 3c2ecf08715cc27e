"""Fused temporal attention vs its fp64 reference (tolerance against a torch control), every
output element written, and the processor vs models.attention.TemporalAttnProcessor."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("triton")

from emo_rt.errors import EmoError  # noqa: E402
from emo_rt.kernels.temporal_attention import (  # noqa: E402
    TritonTemporalAttnProcessor,
    temporal_attention,
    temporal_attention_reference,
)
from emo_rt.kernels.testing import check_against_control, temporal_inputs  # noqa: E402
from emo_rt.models.attention import Attention, TemporalAttnProcessor  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (rows = B*S, f, n, heads, head_dim): head dims of sd15 (40, 80, 160) and tiny (8, 16, 32);
# f = 12 and 7, n = 0 and 4, n + f = 17 spans two key blocks, rows odd (21 = a 3x7 latent)
SHAPES = [
    (5, 12, 4, 2, 40),
    (5, 12, 0, 2, 80),
    (3, 7, 4, 1, 160),
    (5, 7, 0, 2, 16),
    (3, 13, 4, 2, 32),
    (21, 12, 4, 1, 8),
]


def _run(rows: int, frames: int, motion: int, heads: int, head_dim: int, dtype: torch.dtype):
    args = temporal_inputs(rows, frames, motion, heads * head_dim, dtype, DEVICE)
    truth = temporal_attention_reference(*[a.double() for a in args], heads)
    control = temporal_attention_reference(*args, heads)
    return args, truth, control


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows,frames,motion,heads,head_dim", SHAPES)
def test_kernel_matches_reference(rows, frames, motion, heads, head_dim, dtype):
    args, truth, control = _run(rows, frames, motion, heads, head_dim, dtype)
    out = torch.full_like(control, float("nan"))  # poisoned: every element must be written
    temporal_attention(*args, heads, out=out)
    assert not out.isnan().any()
    check_against_control(out, control, truth)


def test_strided_output_is_written_in_place_and_nowhere_else():
    rows, frames, motion, heads, head_dim = 3, 7, 4, 2, 16
    args, truth, control = _run(rows, frames, motion, heads, head_dim, torch.float32)
    channels = heads * head_dim
    buffer = torch.full((frames, rows, 2 * channels), float("nan"), device=DEVICE)
    out = buffer[..., :channels].transpose(0, 1)  # (N, f, C) with strides (2C, 2NC, 1)
    assert temporal_attention(*args, heads, out=out) is out
    assert not out.isnan().any() and buffer[..., channels:].isnan().all()
    check_against_control(out, control, truth)


def test_shape_mismatch_is_one_clear_error():
    args = temporal_inputs(3, 7, 4, 32, torch.float32, DEVICE)
    args[5] = args[5][:-1]  # pos_q one frame short
    with pytest.raises(ValueError, match="inconsistent shapes"):
        temporal_attention(*args, 2)


def _attention(channels: int, heads: int, bias: bool) -> Attention:
    attn = Attention(channels, heads, bias=bias, processor=TemporalAttnProcessor()).to(DEVICE)
    with torch.no_grad():  # position-scale inputs: larger weights than the default init
        for lin in (attn.to_q, attn.to_k, attn.to_v):
            lin.weight.normal_(0, channels**-0.5 * 2)
    return attn.eval()


def _processor_case(attn: Attention, rows: int, frames: int, motion: int, dtype: torch.dtype):
    channels = attn.to_q.in_features
    gen = torch.Generator().manual_seed(1)
    frames_x = torch.randn(rows, frames, channels, generator=gen).to(DEVICE)
    motion_x = torch.randn(rows, motion, channels, generator=gen).to(DEVICE)
    positions = torch.randn(motion + frames, channels, generator=gen).to(DEVICE)
    with torch.no_grad():
        truth = copy.deepcopy(attn).double()(frames_x.double(), motion_x.double(), positions.double())
        low = copy.deepcopy(attn).to(dtype)
        control = low(frames_x.to(dtype), motion_x.to(dtype), positions.to(dtype))
        low.set_processor(TritonTemporalAttnProcessor())
        result = low(frames_x.to(dtype), motion_x.to(dtype), positions.to(dtype))
    return result, control, truth


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("motion,bias,heads,channels", [(4, True, 2, 80), (0, False, 4, 32)])
def test_processor_matches_model_processor(dtype, motion, bias, heads, channels):
    attn = _attention(channels, heads, bias)
    result, control, truth = _processor_case(attn, 5, 12, motion, dtype)
    check_against_control(result, control, truth)


def test_processor_rebuilds_position_tables_when_weights_change():
    attn = _attention(32, 2, bias=True)
    processor = TritonTemporalAttnProcessor()
    frames, motion, positions = (torch.randn(*shape, device=DEVICE) for shape in ((3, 7, 32), (3, 4, 32), (11, 32)))
    with torch.no_grad():
        before = processor(attn, frames, motion, positions)
        attn.load_state_dict({k: v * 1.5 for k, v in attn.state_dict().items()})  # in place
        result = processor(attn, frames, motion, positions)
        expected = TemporalAttnProcessor()(attn, frames, motion, positions)
    # stale tables would be off by the size of the change (~1), fp32 reordering by ~1e-5
    assert (before - expected).abs().max() > 0.1
    torch.testing.assert_close(result, expected, rtol=1e-3, atol=1e-3)


def test_processor_is_forward_only():
    attn = _attention(32, 2, bias=False)
    with pytest.raises(EmoError, match="forward-only"):
        TritonTemporalAttnProcessor()(attn, torch.randn(3, 7, 32, device=DEVICE),
                                      torch.randn(3, 4, 32, device=DEVICE), torch.randn(11, 32, device=DEVICE))
