"""Attention modules (own the weights) and processors (compute), in the diffusers style.

An `Attention` holds `to_q`, `to_k`, `to_v`, `to_out.0` with diffusers' key names, so SD1.5 and
AnimateDiff weights load by name; its forward hands everything to `self.processor`, so a fused
(Triton) or export-friendly implementation is one swap per layer (`set_processor`).

Processors and the tensors they take (C = channels, S = h*w, f frames, n motion frames):
- `SelfAttnProcessor`           x (N, L, C) -> (N, L, C)
- `ReferenceAttnProcessor`      x (B*f, L, C), reference (B, Lr, C) -> (B*f, L, C): keys/values
                                are [x ; reference], the reference shared by the f frames.
- `CrossAttnProcessor`          x (N, L, C), context (N, T, D) -> (N, L, C)  (audio tokens)
- `TemporalAttnProcessor`       frames (B*S, f, C), motion (B*S, n, C), positions (n+f, C)
                                -> (B*S, f, C): only the f frame queries are computed; motion
                                frames are keys/values only (context), at positions 0..n-1.
- `FrameTokenAttnProcessor`     x (B*S, f, C), tokens (B, f, T, D) -> (B*S, f, C): each frame's
                                query attends to that frame's tokens (speed tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention weights; the processor decides what attends to what."""

    def __init__(self, query_dim: int, heads: int, context_dim: int | None = None,
                 bias: bool = False, processor: nn.Module | object | None = None):
        super().__init__()
        if query_dim % heads:
            raise ValueError(f"query_dim {query_dim} is not divisible by heads {heads}")
        context_dim = context_dim or query_dim
        self.heads = heads
        self.head_dim = query_dim // heads
        self.to_q = nn.Linear(query_dim, query_dim, bias=bias)
        self.to_k = nn.Linear(context_dim, query_dim, bias=bias)
        self.to_v = nn.Linear(context_dim, query_dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim), nn.Dropout(0.0)])
        self.processor = processor if processor is not None else SelfAttnProcessor()

    def set_processor(self, processor) -> None:
        self.processor = processor

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.processor(self, *args, **kwargs)

    # helpers shared by processors
    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, C) -> (N, heads, L, head_dim)"""
        n, length, _ = x.shape
        return x.view(n, length, self.heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, heads, L, head_dim) -> (N, L, C)"""
        n, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(n, length, self.heads * self.head_dim)

    def project_out(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_out[1](self.to_out[0](x))


def _attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N, Lq, C), (N, Lk, C), (N, Lk, C) -> (N, Lq, C) through to_out."""
    out = F.scaled_dot_product_attention(attn.split_heads(q), attn.split_heads(k), attn.split_heads(v))
    return attn.project_out(attn.merge_heads(out))


class SelfAttnProcessor:
    """Plain self-attention: x (N, L, C) -> (N, L, C)."""

    def __call__(self, attn: Attention, x: torch.Tensor) -> torch.Tensor:
        return _attend(attn, attn.to_q(x), attn.to_k(x), attn.to_v(x))


class CrossAttnProcessor:
    """Cross-attention to context tokens: x (N, L, C), context (N, T, D) -> (N, L, C)."""

    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return _attend(attn, attn.to_q(x), attn.to_k(context), attn.to_v(context))


class ReferenceAttnProcessor:
    """Self-attention whose keys/values also include the reference tokens ("reference attention").

    x (B*f, L, C), reference (B, Lr, C) or None (plain self-attention), num_frames f.
    """

    def __call__(self, attn: Attention, x: torch.Tensor, reference: torch.Tensor | None,
                 num_frames: int) -> torch.Tensor:
        if reference is None:
            return _attend(attn, attn.to_q(x), attn.to_k(x), attn.to_v(x))
        # project the reference once per batch item, then share it across the f frames
        ref_k = attn.to_k(reference).repeat_interleave(num_frames, dim=0)  # (B*f, Lr, C)
        ref_v = attn.to_v(reference).repeat_interleave(num_frames, dim=0)
        k = torch.cat([attn.to_k(x), ref_k], dim=1)  # (B*f, L+Lr, C)
        v = torch.cat([attn.to_v(x), ref_v], dim=1)
        return _attend(attn, attn.to_q(x), k, v)


class TemporalAttnProcessor:
    """Attention along frames with motion frames as extra keys/values.

    frames (B*S, f, C) and motion (B*S, n, C) are normalised tokens without position encoding;
    positions (n+f, C) is the sinusoidal table: motion frames sit at 0..n-1, frames at n..n+f-1.
    Returns (B*S, f, C): the n motion queries are never computed.
    """

    def __call__(self, attn: Attention, frames: torch.Tensor, motion: torch.Tensor,
                 positions: torch.Tensor) -> torch.Tensor:
        n = motion.shape[1]
        frames = frames + positions[n:]
        context = torch.cat([motion + positions[:n], frames], dim=1)  # (B*S, n+f, C)
        return _attend(attn, attn.to_q(frames), attn.to_k(context), attn.to_v(context))


class FrameTokenAttnProcessor:
    """Per-frame cross-attention in the temporal layout (speed tokens).

    x (B*S, f, C), tokens (B, f, T, D) -> (B*S, f, C); query (b, s, t) attends to tokens[b, t].
    """

    def __call__(self, attn: Attention, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch, frames, num_tokens, _ = tokens.shape
        spatial = x.shape[0] // batch
        h, d = attn.heads, attn.head_dim
        q = attn.to_q(x).view(batch, spatial, frames, h, d)
        k = attn.to_k(tokens).view(batch, frames, num_tokens, h, d)
        v = attn.to_v(tokens).view(batch, frames, num_tokens, h, d)
        scores = torch.einsum("bsfhd,bfthd->bsfht", q, k) * d**-0.5
        out = torch.einsum("bsfht,bfthd->bsfhd", scores.softmax(dim=-1), v)
        return attn.project_out(out.reshape(batch * spatial, frames, h * d))
