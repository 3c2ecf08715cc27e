"""Shared pieces of the attention kernels: the online-softmax step, the dot-precision policy,
the launch checks, the tile resource model, and the cache key of the Triton processors."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import nn

from emo_rt.errors import EmoError

LOG2E = 1.4426950408889634  # scores are scaled by log2(e) so the kernels can use exp2


# Triton picks interpreter or GPU compilation when a kernel is decorated, i.e. when these
# modules are imported: the policies below follow that same moment, not later changes.
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpreting() -> bool:
    """Whether this process's kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1)."""
    return _INTERPRETING


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """Compute-bound kernels (reference attention): fp32 inputs get exact (IEEE) fp32 dots, like
    torch's default fp32 matmul (no TF32); bf16 under the interpreter is upcast too, because its
    bf16 `tl.dot` is silently wrong; otherwise (fp16, bf16 on a GPU) dots run in the input
    dtype with fp32 accumulation, as in flash attention."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and interpreting())


def dot_precision(dtype: torch.dtype) -> str:
    """Memory-bound kernels (temporal attention) keep operands in fp32 after adding the
    position tables: IEEE dots for fp32 inputs, TF32 (10-bit mantissa, at least the input's
    precision) for fp16/bf16 inputs. The interpreter computes both exactly in fp32."""
    return "ieee" if dtype == torch.float32 else "tf32"


def check_launch(*tensors: torch.Tensor) -> None:
    """One clear line instead of Triton's pointer error when the kernels cannot run here."""
    check_forward_only(*tensors)
    if not all(t.is_cuda for t in tensors) and not interpreting():
        raise EmoError("the Triton attention kernels need CUDA tensors (or TRITON_INTERPRET=1 "
                       "for CPU tests): select the sdpa processors on this device")
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1 or not dtypes <= {torch.float32, torch.float16, torch.bfloat16}:
        raise ValueError(f"attention inputs must share one of fp32/fp16/bf16, got {dtypes}")


def output_for(kernel: str, q: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """The kernel's output buffer: `out` if it matches q's shape and dtype, else a new contiguous one."""
    if out is None:
        return torch.empty_like(q, memory_format=torch.contiguous_format)
    if out.shape != q.shape or out.dtype != q.dtype:
        raise ValueError(f"{kernel}: out must be {tuple(q.shape)} {q.dtype}")
    return out


def check_forward_only(*tensors: torch.Tensor, module: nn.Module | None = None) -> None:
    """The kernels have no backward: refuse to run where autograd would need one."""
    if not torch.is_grad_enabled():
        return
    if any(t.requires_grad for t in tensors) or (
            module is not None and any(p.requires_grad for p in module.parameters())):
        raise EmoError("the Triton attention kernels are forward-only: run under torch.no_grad() "
                       "or torch.inference_mode(), or select the sdpa processors for training")


def block_size(n: int, minimum: int = 16) -> int:
    """Power-of-two tile covering n (tl.dot needs every tile side >= 16)."""
    return max(minimum, triton.next_power_of_2(n))


# The interpreter checks no GPU resources, so the launchers choose their tiles by a model of what
# a compiled program holds at least (each kernel file says what it counts), within these budgets;
# benchmarks/gpu_check.py reads what the compiler really made (kernel_resources).
SHARED_MEMORY_BUDGET = 96 * 1024  # bytes per program: sm_86/sm_89 allow 99 KB per block, sm_80 163 KB,
#                                   sm_90 227 KB (two programs per SM fit there)
REGISTER_BUDGET = 128  # 32-bit registers per thread for the live tiles: half the 255 cap, leaving
#                        room for addresses, masks, temporaries and operand layouts


@dataclass(frozen=True)
class Tiles:
    """Block sizes and launch options of one kernel launch, with the resource model's estimates."""

    block_m: int  # queries per program
    block_n: int  # keys per loop step
    block_d: int  # head-dim tile: the power of two covering head_dim
    num_warps: int
    num_stages: int  # software-pipelining depth of the key loop (1: none)
    shared_bytes: int  # estimated shared memory per program
    registers: int  # estimated 32-bit registers per thread held by the live tiles

    def fits(self) -> bool:
        return self.shared_bytes <= SHARED_MEMORY_BUDGET and self.registers <= REGISTER_BUDGET


def registers_per_thread(fp32_elements: float, num_warps: int) -> int:
    """32-bit registers per thread for tiles of `fp32_elements` words spread over the program."""
    return math.ceil(fp32_elements / (32 * num_warps))


def kernel_resources(compiled) -> dict[str, int]:
    """What the compiler made of a launched kernel (the CompiledKernel a GPU launch returns):
    shared memory in bytes (metadata.shared), registers per thread and spilled registers (n_regs,
    n_spills, read from the loaded binary, which a launch has loaded)."""
    metadata = compiled.metadata
    return {"shared_bytes": int(metadata.shared), "registers": int(compiled.n_regs),
            "spills": int(compiled.n_spills), "num_warps": int(metadata.num_warps),
            "num_stages": int(metadata.num_stages)}


@triton.jit
def online_softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale,
                        DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """One key block of flash attention.

    q (M, D), k (N, D), v (N, D); valid (N,) masks padded keys; m_i (M,) running max,
    l_i (M,) running sum, acc (M, D) fp32; qk_scale includes log2(e). DOT_FP32: dots on fp32
    operands with input_precision PRECISION ("ieee" or "tf32"); else dots in the operands'
    dtype (fp16/bf16) with fp32 accumulation. Every block handed in has at least one valid key,
    so m_i is finite after the first block.
    """
    if DOT_FP32:
        s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision=PRECISION)
    else:
        s = tl.dot(q, tl.trans(k))
    s = tl.where(valid[None, :], s * qk_scale, float("-inf"))  # (M, N)
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if DOT_FP32:
        pv = tl.dot(p, v.to(tl.float32), input_precision=PRECISION)
    else:
        pv = tl.dot(p.to(v.dtype), v)
    acc = acc * alpha[:, None] + pv
    return m_new, l_i, acc


def fingerprint(*tensors: torch.Tensor | None) -> tuple:
    """What identifies the content of parameters/buffers without reading them (no device sync):
    storage, view, in-place version counter (bumped by load_state_dict, optimiser steps), dtype."""
    return tuple(None if t is None else (t.data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(),
                                         t._version, t.dtype, t.device) for t in tensors)
