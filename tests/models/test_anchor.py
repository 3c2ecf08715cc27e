"""The anchor (EmoConfig.anchor): the Backbone takes it exactly when configured and it reaches the
output, and residual diffusion round-trips frames."""

import dataclasses

import pytest
import torch

from emo_rt.config import EmoConfig
from emo_rt.models import EmoModel
from emo_rt.models.conditioning import from_diffused, to_diffused
from tests.models.test_backbone import run, window_inputs


@pytest.fixture(scope="module")
def anchored_model(tiny_config):
    torch.manual_seed(1234)
    return EmoModel(dataclasses.replace(tiny_config, anchor="residual")).eval()


@pytest.mark.parametrize("mode", ["none", "residual"])
def test_diffused_latents_round_trip(mode):
    frames, anchor = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 5, 5)
    diffused = to_diffused(frames, anchor, mode)
    # a float32 subtract and add: off by at most an ulp of values below 8 (1e-6), nothing more
    torch.testing.assert_close(from_diffused(diffused, anchor, mode), frames, atol=1e-6, rtol=0)
    if mode == "residual":  # a frame equal to the anchor is diffused as zeros: what does not move is kept
        assert to_diffused(anchor[:, :, None], anchor, mode).abs().max() == 0
    else:
        assert torch.equal(diffused, frames)


def test_the_backbone_takes_the_anchor_exactly_when_configured(tiny_model, anchored_model):
    h, c = tiny_model.config.latent_size, tiny_model.config.vae.latent_channels
    with pytest.raises(ValueError, match="anchor_latents"):
        run(anchored_model, window_inputs(anchored_model))
    with pytest.raises(ValueError, match="anchor_latents"):
        run(tiny_model, dict(window_inputs(tiny_model), anchor_latents=torch.zeros(1, c, h, h)))
    assert anchored_model.backbone.conv_in.in_channels == 2 * tiny_model.backbone.conv_in.in_channels


def test_the_anchor_changes_the_output(anchored_model):
    h, c = anchored_model.config.latent_size, anchored_model.config.vae.latent_channels
    base = window_inputs(anchored_model)
    a = run(anchored_model, dict(base, anchor_latents=torch.zeros(1, c, h, h)))
    other = torch.randn(1, c, h, h, generator=torch.Generator().manual_seed(1))
    b = run(anchored_model, dict(base, anchor_latents=other))
    assert a.shape == base["noisy_latents"].shape
    assert (a - b).abs().max() > 1e-6  # the same bound as test_backbone's: far above float noise


def test_a_config_written_before_the_anchor_loads_without_one(tiny_config):
    data = tiny_config.to_dict()
    del data["anchor"]
    assert EmoConfig.from_dict(data).anchor == "none"
    with pytest.raises(ValueError, match="anchor must be one of"):
        dataclasses.replace(tiny_config, anchor="sideways")
