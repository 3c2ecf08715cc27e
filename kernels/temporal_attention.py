"""Fused temporal attention with motion frames: the Triton kernel, its launcher, a torch
reference and `TritonTemporalAttnProcessor` (same maths as models.attention.TemporalAttnProcessor).

The model attends, at every spatial position, from the f window frames to [n motion frames ;
f frames], each plus its frame position encoding. Projections are linear, so
    to_q(frames + pos[n:]) = frames Wq^T + (pos[n:] Wq^T + bq) = q_x + P_q   (likewise K, V),
and the kernel adds the tiny projected tables P_q (f, C), P_k, P_v (n+f, C) on the fly, reads
motion and frame keys/values from their own tensors through strides (no concatenated copy),
computes only the f kept queries with an online softmax, and writes any output layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from emo_rt.kernels._common import (
    LOG2E,
    Tiles,
    block_size,
    check_forward_only,
    check_launch,
    dot_precision,
    fingerprint,
    kernel_resources,
    online_softmax_step,
    output_for,
    registers_per_thread,
)

if TYPE_CHECKING:  # annotations only: the kernels import without the model stack (transformers, diffusers)
    from emo_rt.models.attention import Attention

BLOCK_KEYS = 16  # keys per step: n + f is small (16 at sd15), so one or two steps


@triton.jit
def _temporal_attention_kernel(
    q_ptr, kf_ptr, vf_ptr, km_ptr, vm_ptr, pq_ptr, pk_ptr, pv_ptr, out_ptr,
    sq_r, sq_t, sq_c, skf_r, skf_t, skf_c, svf_r, svf_t, svf_c,  # (row, frame, channel) strides
    skm_r, skm_t, skm_c, svm_r, svm_t, svm_c, so_r, so_t, so_c,
    spq_t, spq_c, spk_t, spk_c, spv_t, spv_c,  # (position, channel) strides of the tables
    num_frames, num_motion, head_dim, qk_scale,
    BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program = one spatial row (of B*S) and one head: f queries against n + f keys."""
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    # int64 offsets: no overflow at any size (and the interpreter skips its int32 overflow checks)
    offs_f = tl.arange(0, BLOCK_F).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    chan = (head * head_dim + offs_d).to(tl.int64)  # (D,) channels of this head
    mask_d = offs_d < head_dim
    mask_q = (offs_f < num_frames)[:, None] & mask_d[None, :]
    dtype = out_ptr.dtype.element_ty

    q = tl.load(q_ptr + row * sq_r + offs_f[:, None] * sq_t + chan[None, :] * sq_c,
                mask=mask_q, other=0.0).to(tl.float32)
    q += tl.load(pq_ptr + offs_f[:, None] * spq_t + chan[None, :] * spq_c,
                 mask=mask_q, other=0.0).to(tl.float32)
    # q (F, D), k, v (K, D) stay fp32 (memory-bound: the dots are tiny)

    m_i = tl.full([BLOCK_F], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_F], tl.float32)
    acc = tl.zeros([BLOCK_F, BLOCK_D], tl.float32)
    num_keys = num_motion + num_frames
    for start in range(0, num_keys, BLOCK_K):
        pos = start + offs_k  # (K,) key positions: motion 0..n-1, frames n..n+f-1
        valid = pos < num_keys
        in_motion = (pos < num_motion)[:, None] & mask_d[None, :]
        in_frames = (valid & (pos >= num_motion))[:, None] & mask_d[None, :]
        motion_t = tl.minimum(pos, num_motion - 1)[:, None]  # clamped: masked lanes stay in bounds
        frame_t = tl.maximum(pos - num_motion, 0)[:, None]
        table = valid[:, None] & mask_d[None, :]
        k = (tl.load(km_ptr + row * skm_r + motion_t * skm_t + chan[None, :] * skm_c,
                     mask=in_motion, other=0.0).to(tl.float32)
             + tl.load(kf_ptr + row * skf_r + frame_t * skf_t + chan[None, :] * skf_c,
                       mask=in_frames, other=0.0).to(tl.float32)
             + tl.load(pk_ptr + pos[:, None] * spk_t + chan[None, :] * spk_c,
                       mask=table, other=0.0).to(tl.float32))
        v = (tl.load(vm_ptr + row * svm_r + motion_t * svm_t + chan[None, :] * svm_c,
                     mask=in_motion, other=0.0).to(tl.float32)
             + tl.load(vf_ptr + row * svf_r + frame_t * svf_t + chan[None, :] * svf_c,
                       mask=in_frames, other=0.0).to(tl.float32)
             + tl.load(pv_ptr + pos[:, None] * spv_t + chan[None, :] * spv_c,
                       mask=table, other=0.0).to(tl.float32))
        m_i, l_i, acc = online_softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale, True,
                                            PRECISION)

    out = acc / l_i[:, None]
    tl.store(out_ptr + row * so_r + offs_f[:, None] * so_t + chan[None, :] * so_c,
             out.to(dtype), mask=mask_q)


def temporal_attention(q: torch.Tensor, k_frames: torch.Tensor, v_frames: torch.Tensor,
                       k_motion: torch.Tensor, v_motion: torch.Tensor, pos_q: torch.Tensor,
                       pos_k: torch.Tensor, pos_v: torch.Tensor, num_heads: int,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of f frame queries over [n motion ; f frame] keys/values.

    q, k_frames, v_frames   (N, f, C)   projected frames without position or bias (any strides)
    k_motion, v_motion      (N, n, C)   projected motion frames (n may be 0)
    pos_q                   (f, C)      projected positions of the frames (+ q bias)
    pos_k, pos_v            (n+f, C)    projected positions of motion then frames (+ k/v bias)
    out                     (N, f, C)   optional, any strides; returned
    Heads split C as in Attention.split_heads: head h owns channels h*D..(h+1)*D-1.
    """
    rows, frames, channels = q.shape
    motion = k_motion.shape[1]
    if (k_frames.shape != q.shape or v_frames.shape != q.shape
            or k_motion.shape != (rows, motion, channels) or v_motion.shape != k_motion.shape
            or pos_q.shape != (frames, channels) or pos_k.shape != (motion + frames, channels)
            or pos_v.shape != pos_k.shape or channels % num_heads):
        raise ValueError(
            f"temporal_attention: inconsistent shapes q {tuple(q.shape)}, k_motion "
            f"{tuple(k_motion.shape)}, pos_q {tuple(pos_q.shape)}, pos_k {tuple(pos_k.shape)}, "
            f"heads {num_heads}")
    check_launch(q, k_frames, v_frames, k_motion, v_motion)
    out = output_for("temporal_attention", q, out)
    if out.numel():
        _launch(q, k_frames, v_frames, k_motion, v_motion, pos_q, pos_k, pos_v, num_heads, out)
    return out


def _launch(q, k_frames, v_frames, k_motion, v_motion, pos_q, pos_k, pos_v, num_heads: int, out):
    """Launch the kernel on checked arguments; returns what Triton returns (on a GPU the
    CompiledKernel, which kernel_resources reads)."""
    rows, frames, channels = q.shape
    motion = k_motion.shape[1]
    if motion == 0:  # never read (all lanes masked), but the kernel needs valid pointers
        k_motion, v_motion = k_frames, v_frames
    head_dim = channels // num_heads
    tiles = temporal_tiles(frames, head_dim)
    return _temporal_attention_kernel[(rows, num_heads)](
        q, k_frames, v_frames, k_motion, v_motion, pos_q, pos_k, pos_v, out,
        *q.stride(), *k_frames.stride(), *v_frames.stride(),
        *k_motion.stride(), *v_motion.stride(), *out.stride(),
        *pos_q.stride(), *pos_k.stride(), *pos_v.stride(),
        frames, motion, head_dim, head_dim**-0.5 * LOG2E,
        BLOCK_F=tiles.block_m, BLOCK_K=tiles.block_n, BLOCK_D=tiles.block_d,
        PRECISION=dot_precision(q.dtype), num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )


def temporal_tiles(frames: int, head_dim: int) -> Tiles:
    """One program holds the f queries, a block of keys and values, all fp32 (the position tables
    are added on load). Resource model: registers for q (F x D), k and v (K x D each), the fp32
    accumulator (F x D) and scores/probabilities (2 x F x K); shared memory for the dots' operand
    layouts (q, k, p, v once: the key loop runs once or twice, n + f <= 32, so it is not pipelined,
    num_stages 1). The fewest warps among 2, 4, 8 that fit the budgets of _common: at head_dim 160
    (D tile 256) that is 8, where 4 would hold ~130 registers per thread."""
    block_f, block_k, block_d = block_size(frames), BLOCK_KEYS, block_size(head_dim)
    shared = 4 * (block_f * block_d + 2 * block_k * block_d + block_f * block_k)
    words = 2 * block_f * block_d + 2 * block_k * block_d + 2 * block_f * block_k
    candidates = [Tiles(block_f, block_k, block_d, warps, 1, shared, registers_per_thread(words, warps))
                  for warps in (2, 4, 8)]
    return next((t for t in candidates if t.fits()), candidates[-1])


def temporal_attention_resources(q, k_frames, v_frames, k_motion, v_motion, pos_q, pos_k, pos_v,
                                 num_heads: int) -> dict[str, int]:
    """Launch once on CUDA tensors and return the compiled kernel's shared memory, registers and
    spills (benchmarks/gpu_check.py), beside the tile the launcher chose."""
    check_launch(q, k_frames, v_frames, k_motion, v_motion)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    compiled = _launch(q, k_frames, v_frames, k_motion, v_motion, pos_q, pos_k, pos_v, num_heads, out)
    tiles = temporal_tiles(q.shape[1], q.shape[2] // num_heads)
    return {**kernel_resources(compiled), "block_m": tiles.block_m, "block_n": tiles.block_n,
            "block_d": tiles.block_d, "estimated_shared_bytes": tiles.shared_bytes,
            "estimated_registers": tiles.registers}


def temporal_attention_reference(q: torch.Tensor, k_frames: torch.Tensor, v_frames: torch.Tensor,
                                 k_motion: torch.Tensor, v_motion: torch.Tensor,
                                 pos_q: torch.Tensor, pos_k: torch.Tensor, pos_v: torch.Tensor,
                                 num_heads: int) -> torch.Tensor:
    """The launcher's maths in plain torch (concat + softmax), in q's dtype throughout."""
    rows, frames, channels = q.shape
    dtype, head_dim = q.dtype, channels // num_heads

    def heads(x: torch.Tensor) -> torch.Tensor:  # (N, L, C) -> (N, heads, L, D)
        return x.reshape(rows, x.shape[1], num_heads, head_dim).transpose(1, 2)

    query = heads(q + pos_q.to(dtype))
    key = heads(torch.cat([k_motion, k_frames], dim=1) + pos_k.to(dtype))  # (N, h, n+f, D)
    value = heads(torch.cat([v_motion, v_frames], dim=1) + pos_v.to(dtype))
    scores = (query @ key.transpose(-1, -2)) * head_dim**-0.5  # (N, h, f, n+f)
    out = scores.softmax(dim=-1) @ value  # (N, h, f, D)
    return out.transpose(1, 2).reshape(rows, frames, channels)


class TritonTemporalAttnProcessor:
    """Drop-in for TemporalAttnProcessor: frames (B*S, f, C), motion (B*S, n, C),
    positions (n+f, C) -> (B*S, f, C). Forward only (inference).

    The projected position tables (biases folded in, fp32) depend only on the weights and the
    position table, so they are computed once and reused while both stay the same
    (`fingerprint`: storage, view, version); one processor per layer keeps that cache warm.
    """

    def __init__(self) -> None:
        self._tables_key: tuple | None = None
        self._tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def position_tables(self, attn: Attention, positions: torch.Tensor, num_motion: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P_q (f, C) = pos[n:] Wq^T + bq; P_k, P_v (n+f, C) = pos Wk^T + bk, pos Wv^T + bv."""
        linears = (attn.to_q, attn.to_k, attn.to_v)
        key = (num_motion,) + fingerprint(positions, *(p for lin in linears
                                                        for p in (lin.weight, lin.bias)))
        if key != self._tables_key:
            with torch.no_grad():
                table = positions.float()
                pos_q, pos_k, pos_v = (F.linear(table, lin.weight.float(),
                                                None if lin.bias is None else lin.bias.float())
                                       for lin in linears)
            self._tables, self._tables_key = (pos_q[num_motion:], pos_k, pos_v), key
        return self._tables

    def __call__(self, attn: Attention, frames: torch.Tensor, motion: torch.Tensor,
                 positions: torch.Tensor) -> torch.Tensor:
        check_forward_only(frames, motion, positions, module=attn)
        pos_q, pos_k, pos_v = self.position_tables(attn, positions, motion.shape[1])
        w_q, w_k, w_v = attn.to_q.weight, attn.to_k.weight, attn.to_v.weight
        out = temporal_attention(
            F.linear(frames, w_q), F.linear(frames, w_k), F.linear(frames, w_v),  # (N, f, C)
            F.linear(motion, w_k), F.linear(motion, w_v),  # (N, n, C), biases are in the tables
            pos_q, pos_k, pos_v, attn.heads)
        return attn.project_out(out)
