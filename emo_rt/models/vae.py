"""The autoencoder, built from VAEConfig: diffusers' AutoencoderKL (SD's VAE shape at sd15 scale) or
ShuffleAutoencoder (a small convolutional encoder and a sub-pixel decoder, the tiny preset's).
Latents are scaled by the config's scaling factor either way."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from emo_rt.config import VAEConfig
from emo_rt.models.shuffle_autoencoder import ShuffleAutoencoder

Autoencoder = AutoencoderKL | ShuffleAutoencoder


def build_vae(config: VAEConfig, resolution: int) -> Autoencoder:
    if config.kind == "shuffle":
        return ShuffleAutoencoder(
            latent_channels=config.latent_channels, encoder_channels=config.block_out_channels,
            encoder_blocks=config.encoder_blocks, decoder_channels=config.decoder_channels,
            decoder_blocks=config.decoder_blocks, image_skip=config.image_skip, scaling_factor=config.scaling_factor)
    levels = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels, norm_num_groups=config.norm_num_groups,
        sample_size=resolution, scaling_factor=config.scaling_factor,
    )


def encode_unscaled(vae: Autoencoder, images: torch.Tensor, posterior_noise: torch.Tensor | None = None):
    """(N, 3, H, W) in [-1, 1] -> (latents (N, C, h, w) before scaling, KL per element or None).
    AutoencoderKL: its posterior's mode, or a sample with `posterior_noise`; ShuffleAutoencoder is
    deterministic (no KL)."""
    if isinstance(vae, ShuffleAutoencoder):
        return vae.encode(images).latents, None
    dist = vae.encode(images).latent_dist
    latents = dist.mode() if posterior_noise is None else dist.mean + dist.std * posterior_noise
    return latents, dist.kl()


def encode_scaled(vae: Autoencoder, images: torch.Tensor, sample: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, C, h, w) latents times the autoencoder's scaling factor;
    `sample`: an AutoencoderKL's posterior sampled with `generator` instead of its mode."""
    if sample and isinstance(vae, AutoencoderKL):
        return vae.encode(images).latent_dist.sample(generator) * vae.config.scaling_factor
    return encode_unscaled(vae, images)[0] * vae.config.scaling_factor


def decode_scaled(vae: Autoencoder, latents: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) scaled latents -> (N, 3, H, W) images in [-1, 1]."""
    return vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)
