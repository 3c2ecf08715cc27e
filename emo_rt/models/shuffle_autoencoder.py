"""ShuffleAutoencoder: a small convolutional autoencoder whose decoder spends its compute at low
resolution and reaches full resolution by sub-pixel convolution (a convolution to 4x the channels,
then PixelShuffle(2)), instead of convolving at full resolution.

A diffusers model (ModelMixin + ConfigMixin: `save_pretrained` / `from_pretrained` as any diffusers
autoencoder) with AutoencoderTiny's interface: `encode(x).latents`, `decode(z).sample`, images in
[-1, 1], deterministic latents. Blocks are TAESD's (AutoencoderTinyBlock: three 3x3 convolutions
and a residual, ReLU, no normalisation: cheap on a CPU and export-friendly).

Levels, for `encoder_channels` (c0, c1, c2) at 128x128 input: PixelUnshuffle(2) -> 64x64 c0 ->
32x32 c1 -> 16x16 c2 -> latents (16x16 x latent_channels): a downsampling factor of
2 ** len(encoder_channels). The decoder mirrors it: 16x16 d0 -> 32x32 d1 -> 64x64 d2 ->
PixelShuffle(2) -> 128x128 RGB.

`image_skip`: the latents' first 3 channels are the image itself, averaged over each latent cell,
and the decoder adds their bilinear upsampling to what it draws. Colour then passes through the
autoencoder exactly; the networks only carry detail relative to it (trained on a few hundred
identities, a plain autoencoder learns their palettes and shifts the hues of unseen ones).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTinyOutput
from diffusers.models.autoencoders.vae import AutoencoderTinyBlock, DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _blocks(channels: int, count: int) -> list[nn.Module]:
    return [AutoencoderTinyBlock(channels, channels, "relu") for _ in range(count)]


class ShuffleEncoder(nn.Module):
    """(N, 3, H, W) -> (N, latent_channels, H / 2**levels, W / 2**levels)."""

    def __init__(self, in_channels: int, latent_channels: int, channels: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(2), nn.Conv2d(4 * in_channels, channels[0], 3, padding=1),
                                   nn.ReLU()]
        for i, (c, n) in enumerate(zip(channels, blocks)):
            if i > 0:  # stride-2 convolution to the next level
                layers.append(nn.Conv2d(channels[i - 1], c, 3, stride=2, padding=1))
            layers += _blocks(c, n)
        layers.append(nn.Conv2d(channels[-1], latent_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ShuffleDecoder(nn.Module):
    """(N, latent_channels, h, w) -> (N, out_channels, h * 2**levels, w * 2**levels)."""

    def __init__(self, latent_channels: int, out_channels: int, channels: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, channels[0], 3, padding=1), nn.ReLU()]
        for i, (c, n) in enumerate(zip(channels, blocks)):
            if i > 0:  # sub-pixel upsampling: 1x1 convolution to 4c channels, then (4c, h, w) -> (c, 2h, 2w)
                layers += [nn.Conv2d(channels[i - 1], 4 * c, 1), nn.PixelShuffle(2)]
            layers += _blocks(c, n)
        layers += [nn.Conv2d(channels[-1], 4 * out_channels, 3, padding=1), nn.PixelShuffle(2)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class ShuffleAutoencoder(ModelMixin, ConfigMixin):
    """Encoder and sub-pixel decoder; latents are used unscaled by the model and multiplied by
    `scaling_factor` (1 / their std on training frames) where the diffusion model sees them."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 16,
        encoder_channels: tuple[int, ...] = (32, 64, 128),
        encoder_blocks: tuple[int, ...] = (1, 1, 2),
        decoder_channels: tuple[int, ...] = (128, 64, 32),
        decoder_blocks: tuple[int, ...] = (1, 1, 1),
        image_skip: bool = False,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        if not len(encoder_channels) == len(encoder_blocks) == len(decoder_channels) == len(decoder_blocks):
            raise ValueError("ShuffleAutoencoder: encoder/decoder channels and blocks need one entry per level")
        self.factor = 2 ** len(encoder_channels)
        self.skip = in_channels if image_skip else 0  # latent channels that hold the cell-averaged image
        if image_skip and (in_channels != out_channels or latent_channels <= in_channels):
            raise ValueError("ShuffleAutoencoder: image_skip needs out_channels == in_channels < latent_channels")
        self.encoder = ShuffleEncoder(in_channels, latent_channels - self.skip, tuple(encoder_channels),
                                      tuple(encoder_blocks))
        self.decoder = ShuffleDecoder(latent_channels, out_channels, tuple(decoder_channels), tuple(decoder_blocks))

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderTinyOutput | tuple[torch.Tensor]:
        latents = self.encoder(x)  # (N, C - skip, H/8, W/8)
        if self.skip:
            latents = torch.cat([F.avg_pool2d(x, self.factor), latents], dim=1)  # (N, C, H/8, W/8)
        return AutoencoderTinyOutput(latents=latents) if return_dict else (latents,)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        images = self.decoder(z)  # (N, 3, H, W), about [-1, 1]
        if self.skip:
            images = images + F.interpolate(z[:, :self.skip], scale_factor=self.factor, mode="bilinear",
                                            align_corners=False)
        return DecoderOutput(sample=images) if return_dict else (images,)

    def forward(self, sample: torch.Tensor) -> DecoderOutput:
        return self.decode(self.encode(sample).latents)
