"""The VAE: diffusers' AutoencoderKL built from VAEConfig (SD's VAE shape at sd15 scale)."""

from __future__ import annotations

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
