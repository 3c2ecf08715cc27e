"""Spatial transformer layers (SD1.5's Transformer2DModel shape) with reference and audio attention.

Block order, per EMO: reference attention (self-attention whose keys/values also hold the
ReferenceNet's features) -> audio cross-attention -> feed-forward. SD1.5's text cross-attention
(`attn2`, `norm2`) has no counterpart: emo-rt has no text path.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from emo_rt.models.attention import (
    Attention,
    CrossAttnProcessor,
    ReferenceAttnProcessor,
)
from emo_rt.models.conditioning import Conditioning


class SpatialBlock(nn.Module):
    """x (B*f, L, C) -> (B*f, L, C). `index` is this layer's slot in the reference feature list."""

    def __init__(self, channels: int, heads: int, index: int, audio_dim: int | None):
        super().__init__()
        self.index = index
        self.norm1 = nn.LayerNorm(channels)
        self.attn1 = Attention(channels, heads, processor=ReferenceAttnProcessor())
        if audio_dim is not None:
            self.norm_audio = nn.LayerNorm(channels)
            self.audio_attn = Attention(channels, heads, context_dim=audio_dim, processor=CrossAttnProcessor())
        else:
            self.norm_audio = self.audio_attn = None
        self.norm3 = nn.LayerNorm(channels)
        self.ff = FeedForward(channels, activation_fn="geglu")

    def forward(self, x: torch.Tensor, cond: Conditioning,
                reference_sink: list[torch.Tensor] | None) -> torch.Tensor:
        h = self.norm1(x)
        if reference_sink is not None:  # ReferenceNet: these normalised inputs are the features
            reference_sink.append(h)
        reference = None if cond.reference_features is None else cond.reference_features[self.index]
        x = x + self.attn1(h, reference, cond.num_frames)
        if self.audio_attn is not None:
            x = x + self.audio_attn(self.norm_audio(x), cond.audio_tokens_per_frame())
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """(N, C, h, w) -> (N, C, h, w): GroupNorm, proj_in, one SpatialBlock, proj_out, residual."""

    def __init__(self, channels: int, heads: int, groups: int, index: int, audio_dim: int | None,
                 linear_projection: bool):
        super().__init__()
        self.linear_projection = linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        proj = (lambda: nn.Linear(channels, channels)) if linear_projection else (
            lambda: nn.Conv2d(channels, channels, kernel_size=1))
        self.proj_in = proj()
        self.transformer_blocks = nn.ModuleList([SpatialBlock(channels, heads, index, audio_dim)])
        self.proj_out = proj()

    def forward(self, x: torch.Tensor, cond: Conditioning,
                reference_sink: list[torch.Tensor] | None) -> torch.Tensor:
        n, c, h, w = x.shape
        residual = x
        x = self.norm(x)
        if not self.linear_projection:
            x = self.proj_in(x)
        x = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # (N, L, C)
        if self.linear_projection:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, cond, reference_sink)
        if self.linear_projection:
            x = self.proj_out(x)
        x = x.reshape(n, h, w, c).permute(0, 3, 1, 2)
        if not self.linear_projection:
            x = self.proj_out(x)
        return x + residual
