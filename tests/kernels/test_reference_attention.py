"""Two-source reference attention vs its fp64 reference (tolerance against a torch control),
every output element written, and the processor vs models.attention.ReferenceAttnProcessor."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("triton")

from emo_rt.errors import EmoError  # noqa: E402
from emo_rt.kernels.reference_attention import (  # noqa: E402
    TritonReferenceAttnProcessor,
    reference_attention,
    reference_attention_reference,
)
from emo_rt.kernels.testing import check_against_control, reference_inputs  # noqa: E402
from emo_rt.models.attention import Attention, ReferenceAttnProcessor  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (B, f, L, Lr, heads, head_dim): odd token counts (21 = 3x7, 63 = 7x9 latents), several query
# and key blocks (L = 130 > 2 x 64), Lr = 0 (no reference), Lr > L, B = 2 (row // f matters)
SHAPES = [
    (1, 2, 21, 21, 2, 40),
    (2, 2, 63, 63, 1, 80),
    (1, 3, 21, 0, 1, 160),
    (1, 2, 130, 7, 1, 16),
    (2, 1, 9, 70, 2, 32),
    (1, 2, 21, 21, 4, 8),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch,frames,tokens,ref_tokens,heads,head_dim", SHAPES)
def test_kernel_matches_reference(batch, frames, tokens, ref_tokens, heads, head_dim, dtype):
    args = reference_inputs(batch, frames, tokens, ref_tokens, heads * head_dim, dtype, DEVICE)
    truth = reference_attention_reference(*[None if a is None else a.double() for a in args],
                                          frames, heads)
    control = reference_attention_reference(*args, frames, heads)
    out = torch.full_like(control, float("nan"))  # poisoned: every element must be written
    reference_attention(*args, frames, heads, out=out)
    assert not out.isnan().any()
    check_against_control(out, control, truth)


def test_strided_output_is_written_in_place_and_nowhere_else():
    batch, frames, tokens, heads, channels = 1, 2, 21, 2, 32
    args = reference_inputs(batch, frames, tokens, 9, channels, torch.float32, DEVICE)
    truth = reference_attention_reference(*[a.double() for a in args], frames, heads)
    control = reference_attention_reference(*args, frames, heads)
    buffer = torch.full((tokens, batch * frames, 2 * channels), float("nan"), device=DEVICE)
    out = buffer[..., channels:].transpose(0, 1)  # (B*f, L, C), strides (2C, 2NC... ), offset C
    assert reference_attention(*args, frames, heads, out=out) is out
    assert not out.isnan().any() and buffer[..., :channels].isnan().all()
    check_against_control(out, control, truth)


def test_reference_batch_mismatch_is_one_clear_error():
    args = reference_inputs(2, 2, 9, 9, 32, torch.float32, DEVICE)
    with pytest.raises(ValueError, match="k_ref/v_ref must be"):
        reference_attention(*args, 4, 2)  # 4 rows as 1 item of 4 frames, but 2 references


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_reference", [True, False], ids=["reference", "none"])
def test_processor_matches_model_processor(dtype, with_reference):
    batch, frames, tokens, channels, heads = 2, 2, 21, 80, 2
    attn = Attention(channels, heads, processor=ReferenceAttnProcessor()).to(DEVICE).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch * frames, tokens, channels, generator=gen).to(DEVICE)
    reference = torch.randn(batch, 15, channels, generator=gen).to(DEVICE) if with_reference else None

    def cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        return None if t is None else t.to(dtype)

    with torch.no_grad():
        truth = copy.deepcopy(attn).double()(x.double(), cast(reference, torch.float64), frames)
        low = copy.deepcopy(attn).to(dtype)
        control = low(x.to(dtype), cast(reference, dtype), frames)
        low.set_processor(TritonReferenceAttnProcessor())
        result = low(x.to(dtype), cast(reference, dtype), frames)
    check_against_control(result, control, truth)


def test_processor_is_forward_only():
    attn = Attention(32, 2).to(DEVICE)
    with pytest.raises(EmoError, match="forward-only"):
        TritonReferenceAttnProcessor()(attn, torch.randn(2, 9, 32, device=DEVICE), None, 2)
