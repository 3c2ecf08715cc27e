"""Temporal (motion) modules: AnimateDiff v2's motion-module shape, with EMO's motion frames.

Each module attends along the frame axis at every spatial position. The n motion frames'
features (from the ReferenceNet) are context: they are normalised and projected like the frames,
sit at frame positions 0..n-1 of the sinusoidal table, and serve as extra keys/values in both
temporal attentions; only the f window frames are queried, updated and returned. Speed tokens
enter through a per-frame cross-attention between the temporal attentions and the feed-forward.
Key names match diffusers' MotionAdapter (`norm`, `proj_in`, `transformer_blocks.0.attn1`, ...).
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import SinusoidalPositionalEmbedding
from torch import nn

from emo_rt.models.attention import (
    Attention,
    FrameTokenAttnProcessor,
    TemporalAttnProcessor,
)
from emo_rt.models.conditioning import Conditioning


class TemporalBlock(nn.Module):
    """frames (B*S, f, C), motion (B*S, n, C) -> (B*S, f, C)."""

    def __init__(self, channels: int, heads: int, max_positions: int, speed_dim: int | None):
        super().__init__()
        self.pos_embed = SinusoidalPositionalEmbedding(channels, max_seq_length=max_positions)
        self.norm1 = nn.LayerNorm(channels)
        self.attn1 = Attention(channels, heads, processor=TemporalAttnProcessor())
        self.norm2 = nn.LayerNorm(channels)
        self.attn2 = Attention(channels, heads, processor=TemporalAttnProcessor())
        if speed_dim is not None:
            self.norm_speed = nn.LayerNorm(channels)
            self.speed_attn = Attention(channels, heads, context_dim=speed_dim,
                                        processor=FrameTokenAttnProcessor())
        else:
            self.norm_speed = self.speed_attn = None
        self.norm3 = nn.LayerNorm(channels)
        self.ff = FeedForward(channels, activation_fn="geglu")

    def forward(self, frames: torch.Tensor, motion: torch.Tensor,
                speed_tokens: torch.Tensor | None) -> torch.Tensor:
        positions = self.pos_embed.pe[0, : motion.shape[1] + frames.shape[1]]  # (n+f, C)
        x = frames
        x = x + self.attn1(self.norm1(x), self.norm1(motion), positions)
        x = x + self.attn2(self.norm2(x), self.norm2(motion), positions)
        if self.speed_attn is not None:
            if speed_tokens is None:
                raise ValueError("this Backbone has speed attention: speed_tokens are required")
            x = x + self.speed_attn(self.norm_speed(x), speed_tokens)
        return x + self.ff(self.norm3(x))


class TemporalModule(nn.Module):
    """(B*f, C, h, w) + motion (B, n, C, h, w) -> (B*f, C, h, w), residual around the whole."""

    def __init__(self, channels: int, heads: int, groups: int, max_positions: int, index: int,
                 speed_dim: int | None):
        super().__init__()
        self.index = index
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TemporalBlock(channels, heads, max_positions, speed_dim)])
        self.proj_out = nn.Linear(channels, channels)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) -> (B*h*w, F, C): GroupNorm over (C/g, F, h, w), then proj_in."""
        b, f, c, h, w = x.shape
        x = self.norm(x.permute(0, 2, 1, 3, 4))  # (B, C, F, h, w)
        return self.proj_in(x.permute(0, 3, 4, 2, 1).reshape(b * h * w, f, c))

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        bf, c, h, w = x.shape
        f = cond.num_frames
        b = bf // f
        frames = self._tokens(x.view(b, f, c, h, w))  # (B*S, f, C)
        motion_features = None if cond.motion_features is None else cond.motion_features[self.index]
        if motion_features is None or motion_features.shape[1] == 0:
            motion = frames.new_zeros(b * h * w, 0, c)
        else:
            motion = self._tokens(motion_features)  # (B*S, n, C), normalised on its own
        for block in self.transformer_blocks:
            frames = block(frames, motion, cond.speed_tokens)
        out = self.proj_out(frames).reshape(b, h, w, f, c).permute(0, 3, 4, 1, 2)
        return out.reshape(bf, c, h, w) + x
