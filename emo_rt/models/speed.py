"""Speed path: per-frame head speed -> soft bucket code over frames t-m..t+m -> tokens.

Bucket code (EMO): s_i = tanh((w - c_i) / r_i * 3) for d buckets with centres c_i and radii r_i
(fitted on the training data, stored in SpeedConfig).
"""

from __future__ import annotations

import torch
from torch import nn

from emo_rt.config import SpeedConfig
from emo_rt.models.audio import context_windows


class SpeedEncoder(nn.Module):
    """(B, F) head speed -> (B, F, T, D) speed tokens."""

    def __init__(self, config: SpeedConfig):
        super().__init__()
        self.config = config
        self.register_buffer("centres", torch.tensor(config.bucket_centres), persistent=False)
        self.register_buffer("radii", torch.tensor(config.bucket_radii), persistent=False)
        d = len(config.bucket_centres)
        self.mlp = nn.Sequential(
            nn.Linear((2 * config.context_frames + 1) * d, config.hidden), nn.SiLU(),
            nn.Linear(config.hidden, config.num_tokens * config.token_dim),
        )

    def buckets(self, speed: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, F, d)"""
        return torch.tanh((speed[..., None] - self.centres) / self.radii * 3)

    def forward(self, speed: torch.Tensor) -> torch.Tensor:
        b, f = speed.shape
        codes = context_windows(self.buckets(speed), self.config.context_frames).reshape(b, f, -1)
        return self.mlp(codes).reshape(b, f, self.config.num_tokens, self.config.token_dim)
