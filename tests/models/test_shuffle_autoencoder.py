"""ShuffleAutoencoder: shapes, the image skip's exact colour path, save/load, bad configurations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emo_rt.config import VAEConfig, tiny
from emo_rt.models.shuffle_autoencoder import ShuffleAutoencoder
from emo_rt.models.vae import build_vae, decode_scaled, encode_scaled


def small(**changes) -> ShuffleAutoencoder:
    torch.manual_seed(0)
    return ShuffleAutoencoder(**{"latent_channels": 8, "encoder_channels": (8, 16, 16), "encoder_blocks": (1, 1, 1),
                                 "decoder_channels": (16, 16, 8), "decoder_blocks": (1, 1, 0), **changes}).eval()


@pytest.mark.parametrize("levels, factor", [((8, 16, 16), 8), ((8, 16), 4)])
def test_shapes_follow_the_levels(levels, factor):
    n = len(levels)
    vae = small(encoder_channels=levels, encoder_blocks=(1,) * n, decoder_channels=levels[::-1],
                decoder_blocks=(1,) * n)
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latents
        assert z.shape == (2, 8, 48 // factor, 48 // factor)
        assert vae.decode(z).sample.shape == x.shape


def test_the_image_skip_carries_the_cell_averaged_image():
    vae = small(image_skip=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latents
        torch.testing.assert_close(z[:, :3], F.avg_pool2d(x, 8), rtol=0, atol=1e-6)
        last = vae.decoder.layers[-2]  # the convolution before the final PixelShuffle
        last.weight.zero_(), last.bias.zero_()  # the networks draw nothing: only the skip remains
        flat = torch.full((1, 3, 32, 32), 0.3)
        flat[:, 1] = -0.6  # one flat colour passes exactly
        torch.testing.assert_close(vae(flat).sample, flat, rtol=0, atol=1e-6)
        # control: without the skip the same zeroed decoder returns zeros, not the colour
        plain = small()
        plain.decoder.layers[-2].weight.zero_(), plain.decoder.layers[-2].bias.zero_()
        assert plain(flat).sample.abs().max() == 0


def test_save_and_load_round_trip(tmp_path):
    vae = small(image_skip=True, scaling_factor=0.7)
    vae.save_pretrained(tmp_path / "vae")
    loaded = ShuffleAutoencoder.from_pretrained(tmp_path / "vae").eval()
    assert loaded.config.scaling_factor == 0.7 and loaded.config.image_skip
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x).sample, vae(x).sample)


def test_the_tiny_preset_builds_it_and_scales_its_latents():
    config = tiny()
    vae = build_vae(config.vae, config.resolution).eval()
    assert isinstance(vae, ShuffleAutoencoder) and config.vae.downsample_factor == 8
    vae.register_to_config(scaling_factor=0.5)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        z = encode_scaled(vae, x)
        torch.testing.assert_close(z, vae.encode(x).latents * 0.5)
        torch.testing.assert_close(decode_scaled(vae, z), vae.decode(z / 0.5).sample.clamp(-1, 1))


@pytest.mark.parametrize("changes, message", [
    ({"decoder_blocks": (1, 1)}, "one entry per level"),
    ({"image_skip": True, "latent_channels": 3}, "image_skip needs"),
])
def test_bad_shapes_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        small(**changes)


def test_a_shuffle_config_needs_one_entry_per_level():
    with pytest.raises(ValueError, match="needs 3 encoder_blocks"):
        VAEConfig(kind="shuffle", block_out_channels=(8, 16, 16), encoder_blocks=(1, 1), decoder_channels=(16, 16, 8),
                  decoder_blocks=(1, 1, 0))
