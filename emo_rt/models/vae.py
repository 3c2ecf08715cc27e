"""The VAE: diffusers' AutoencoderKL built from VAEConfig (SD's VAE shape at sd15 scale)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from emo_rt.config import VAEConfig


def build_vae(config: VAEConfig, resolution: int) -> AutoencoderKL:
    levels = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels, norm_num_groups=config.norm_num_groups,
        sample_size=resolution, scaling_factor=config.scaling_factor,
    )


def encode_scaled(vae: AutoencoderKL, images: torch.Tensor, sample: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 4, H/8, W/8) latents times the VAE's scaling factor."""
    dist = vae.encode(images).latent_dist
    latents = dist.sample(generator) if sample else dist.mode()
    return latents * vae.config.scaling_factor


def decode_scaled(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """(N, 4, h, w) scaled latents -> (N, 3, H, W) images in [-1, 1]."""
    return vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)
