"""Two-source flash attention for reference attention: the Triton kernel, its launcher, a torch
reference and `TritonReferenceAttnProcessor` (same maths as models.attention.ReferenceAttnProcessor).

Each frame's queries attend to [its own tokens ; the reference tokens of its batch item]. The
kernel walks both key/value sources in turn with one online softmax, indexing the reference by
row // num_frames, so neither the repeat_interleave of the reference nor the concat is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl

from emo_rt.kernels._common import (
    LOG2E,
    Tiles,
    block_size,
    check_forward_only,
    check_launch,
    dot_in_fp32,
    kernel_resources,
    online_softmax_step,
    output_for,
    registers_per_thread,
)

if TYPE_CHECKING:  # annotations only: the kernels import without the model stack (transformers, diffusers)
    from emo_rt.models.attention import Attention


@triton.jit
def _reference_attention_kernel(
    q_ptr, ks_ptr, vs_ptr, kr_ptr, vr_ptr, out_ptr,
    sq_r, sq_t, sq_c, sks_r, sks_t, sks_c, svs_r, svs_t, svs_c,  # (row, token, channel) strides
    skr_r, skr_t, skr_c, svr_r, svr_t, svr_c, so_r, so_t, so_c,
    num_heads, num_frames, seq_len, ref_len, head_dim, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_FP32: tl.constexpr,
):
    """One program = BLOCK_M queries of one (frame row, head) against L own + Lr reference keys."""
    row = (tl.program_id(1) // num_heads).to(tl.int64)
    head = tl.program_id(1) % num_heads
    ref_row = row // num_frames  # batch item whose reference tokens this frame shares
    # int64 offsets: no overflow at any size (and the interpreter skips its int32 overflow checks)
    offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    chan = (head * head_dim + offs_d).to(tl.int64)[None, :]  # (1, D) channels of this head
    mask_d = (offs_d < head_dim)[None, :]
    mask_q = (offs_m < seq_len)[:, None] & mask_d
    dtype = out_ptr.dtype.element_ty

    q = tl.load(q_ptr + row * sq_r + offs_m[:, None] * sq_t + chan * sq_c, mask=mask_q, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, seq_len, BLOCK_N):  # source 1: the frame's own tokens
        tok = start + offs_n
        valid = tok < seq_len
        mask = valid[:, None] & mask_d
        k = tl.load(ks_ptr + row * sks_r + tok[:, None] * sks_t + chan * sks_c, mask=mask, other=0.0)
        v = tl.load(vs_ptr + row * svs_r + tok[:, None] * svs_t + chan * svs_c, mask=mask, other=0.0)
        m_i, l_i, acc = online_softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale, DOT_FP32,
                                            "ieee")
    for start in range(0, ref_len, BLOCK_N):  # source 2: the shared reference tokens
        tok = start + offs_n
        valid = tok < ref_len
        mask = valid[:, None] & mask_d
        k = tl.load(kr_ptr + ref_row * skr_r + tok[:, None] * skr_t + chan * skr_c, mask=mask,
                    other=0.0)
        v = tl.load(vr_ptr + ref_row * svr_r + tok[:, None] * svr_t + chan * svr_c, mask=mask,
                    other=0.0)
        m_i, l_i, acc = online_softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale, DOT_FP32,
                                            "ieee")

    out = acc / l_i[:, None]
    tl.store(out_ptr + row * so_r + offs_m[:, None] * so_t + chan * so_c, out.to(dtype), mask=mask_q)


def reference_attention(q: torch.Tensor, k_self: torch.Tensor, v_self: torch.Tensor,
                        k_ref: torch.Tensor | None, v_ref: torch.Tensor | None, num_frames: int,
                        num_heads: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of each frame's tokens over [own tokens ; its batch item's reference].

    q, k_self, v_self   (B*f, L, C)   projected frame tokens (any strides)
    k_ref, v_ref        (B, Lr, C)    projected reference tokens, or None: plain self-attention
                                      through the same kernel (zero reference length)
    out                 (B*f, L, C)   optional, any strides; returned
    Row r uses reference row r // num_frames. Heads split C as in Attention.split_heads.
    """
    rows, _, channels = q.shape
    if k_ref is None or v_ref is None:
        if (k_ref is None) != (v_ref is None):
            raise ValueError("reference_attention: give both k_ref and v_ref, or neither")
        ref_len = 0
    else:
        ref_len = k_ref.shape[1]
        if (k_ref.shape != (rows // num_frames, ref_len, channels) or v_ref.shape != k_ref.shape
                or rows % num_frames):
            raise ValueError(f"reference_attention: k_ref/v_ref must be (B, Lr, {channels}) with "
                             f"B*{num_frames} = {rows} rows, got {tuple(k_ref.shape)}, "
                             f"{tuple(v_ref.shape)}")
    if k_self.shape != q.shape or v_self.shape != q.shape or channels % num_heads:
        raise ValueError(f"reference_attention: q, k_self, v_self must share a (B*f, L, C) shape "
                         f"with C divisible by {num_heads} heads, got {tuple(q.shape)}, "
                         f"{tuple(k_self.shape)}, {tuple(v_self.shape)}")
    check_launch(q, k_self, v_self, *(t for t in (k_ref, v_ref) if t is not None))
    out = output_for("reference_attention", q, out)
    if out.numel():
        _launch(q, k_self, v_self, k_ref, v_ref, out, num_frames, num_heads)
    return out


def _launch(q, k_self, v_self, k_ref, v_ref, out, num_frames: int, num_heads: int):
    """Launch the kernel on checked arguments; returns what Triton returns (on a GPU the
    CompiledKernel, which kernel_resources reads)."""
    rows, seq_len, channels = q.shape
    ref_len = 0 if k_ref is None else k_ref.shape[1]
    if ref_len == 0:  # never read, but the kernel needs valid pointers
        k_ref, v_ref = k_self, v_self
    head_dim = channels // num_heads
    tiles = reference_tiles(seq_len, ref_len, head_dim, q.dtype)
    grid = (triton.cdiv(seq_len, tiles.block_m), rows * num_heads)
    return _reference_attention_kernel[grid](
        q, k_self, v_self, k_ref, v_ref, out,
        *q.stride(), *k_self.stride(), *v_self.stride(), *k_ref.stride(), *v_ref.stride(),
        *out.stride(),
        num_heads, num_frames, seq_len, ref_len, head_dim, head_dim**-0.5 * LOG2E,
        BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_D=tiles.block_d,
        DOT_FP32=dot_in_fp32(q.dtype), num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )


NUM_STAGES = 2  # double-buffered key/value loads; Triton's default (3) costs a third more shared memory


def reference_tile_estimate(block_m: int, block_n: int, head_dim: int, dtype: torch.dtype,
                            num_warps: int, num_stages: int = NUM_STAGES,
                            dot_fp32: bool | None = None) -> Tiles:
    """The resource model of one program. Shared memory: the key and value tiles in flight
    (num_stages of each, in the input dtype), the query and probability tiles as dot operands
    (fp32 where the dots are). Registers: the fp32 accumulator (M x D), the query tile (M x D at the
    dot dtype), the fp32 scores and probabilities (2 x M x N)."""
    block_d = block_size(head_dim)
    load = torch.empty((), dtype=dtype).element_size()
    dot = 4 if dot_in_fp32(dtype) else load
    shared = (max(num_stages, 1) * 2 * block_n * block_d * load
              + block_m * block_d * dot + block_m * block_n * dot)
    words = block_m * block_d + block_m * block_d * dot / 4 + 2 * block_m * block_n
    return Tiles(block_m, block_n, block_d, num_warps, num_stages, shared,
                 registers_per_thread(words, num_warps))


def reference_tiles(seq_len: int, ref_len: int, head_dim: int, dtype: torch.dtype,
                    dot_fp32: bool | None = None) -> Tiles:
    """The largest square tile (64, 32, then 16; never wider than the tokens need, so small levels
    and interpreter tests use small tiles) with 4 or 8 warps that fits the budgets of _common.
    fp32 at head_dim 160 (D tile 256) gets 16 x 16: 32 x 32 with Triton's default 3 stages would
    need about 228 KB of shared memory, more than any GPU has per block."""
    candidates = [reference_tile_estimate(min(side, block_size(seq_len)),
                                          min(side, block_size(max(seq_len, ref_len))),
                                          head_dim, dtype, warps, dot_fp32=dot_fp32)
                  for side in (64, 32, 16) for warps in (4, 8)]
    return next((t for t in candidates if t.fits()), candidates[-1])


def reference_attention_resources(q, k_self, v_self, k_ref, v_ref, num_frames: int,
                                  num_heads: int) -> dict[str, int]:
    """Launch once on CUDA tensors and return the compiled kernel's shared memory, registers and
    spills (benchmarks/gpu_check.py), beside the tile the launcher chose."""
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    check_launch(q, k_self, v_self, *(t for t in (k_ref, v_ref) if t is not None))
    compiled = _launch(q, k_self, v_self, k_ref, v_ref, out, num_frames, num_heads)
    tiles = reference_tiles(q.shape[1], 0 if k_ref is None else k_ref.shape[1],
                            q.shape[2] // num_heads, q.dtype)
    return {**kernel_resources(compiled), "block_m": tiles.block_m, "block_n": tiles.block_n,
            "block_d": tiles.block_d, "estimated_shared_bytes": tiles.shared_bytes,
            "estimated_registers": tiles.registers}


def reference_attention_reference(q: torch.Tensor, k_self: torch.Tensor, v_self: torch.Tensor,
                                  k_ref: torch.Tensor | None, v_ref: torch.Tensor | None,
                                  num_frames: int, num_heads: int) -> torch.Tensor:
    """The launcher's maths in plain torch (repeat_interleave + concat + softmax), in q's dtype."""
    rows, seq_len, channels = q.shape
    head_dim = channels // num_heads
    if k_ref is not None and v_ref is not None:
        k_self = torch.cat([k_self, k_ref.repeat_interleave(num_frames, dim=0)], dim=1)
        v_self = torch.cat([v_self, v_ref.repeat_interleave(num_frames, dim=0)], dim=1)

    def heads(x: torch.Tensor) -> torch.Tensor:  # (N, L, C) -> (N, heads, L, D)
        return x.reshape(rows, x.shape[1], num_heads, head_dim).transpose(1, 2)

    scores = (heads(q) @ heads(k_self).transpose(-1, -2)) * head_dim**-0.5  # (N, h, L, L+Lr)
    out = scores.softmax(dim=-1) @ heads(v_self)  # (N, h, L, D)
    return out.transpose(1, 2).reshape(rows, seq_len, channels)


class TritonReferenceAttnProcessor:
    """Drop-in for ReferenceAttnProcessor: x (B*f, L, C), reference (B, Lr, C) or None,
    num_frames f -> (B*f, L, C). reference None runs the same kernel with no reference keys.
    Forward only (inference)."""

    def __call__(self, attn: Attention, x: torch.Tensor, reference: torch.Tensor | None,
                 num_frames: int) -> torch.Tensor:
        check_forward_only(x, *(() if reference is None else (reference,)), module=attn)
        k_ref = v_ref = None
        if reference is not None:  # projected once per batch item, shared by its f frames
            k_ref, v_ref = attn.to_k(reference), attn.to_v(reference)  # (B, Lr, C)
        out = reference_attention(attn.to_q(x), attn.to_k(x), attn.to_v(x), k_ref, v_ref,
                                  num_frames, attn.heads)
        return attn.project_out(out)
