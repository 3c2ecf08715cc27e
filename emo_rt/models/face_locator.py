"""FaceLocator: face-region mask (image resolution) -> latent-resolution features added to latents."""

from __future__ import annotations

import torch
from torch import nn

from emo_rt.config import FaceLocatorConfig


class FaceLocator(nn.Module):
    """(B, 1, H, W) mask in [0, 1] -> (B, latent_channels, H/8, W/8) (one stride-2 conv per level)."""

    def __init__(self, config: FaceLocatorConfig, latent_channels: int):
        super().__init__()
        ch = config.channels
        self.conv_in = nn.Conv2d(1, ch[0], kernel_size=3, padding=1)
        blocks = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            blocks += [nn.Conv2d(c_in, c_in, kernel_size=3, padding=1), nn.SiLU(),
                       nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2), nn.SiLU()]
        self.blocks = nn.Sequential(*blocks)
        self.conv_out = nn.Conv2d(ch[-1], latent_channels, kernel_size=3, padding=1)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.blocks(torch.nn.functional.silu(self.conv_in(mask))))
