"""The tiny Backbone gives the same window with the Triton processors as with the torch ones (on
CUDA where there is one, with TF32 off so the torch control computes in fp32 as the kernels do)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

pytest.importorskip("triton")

from emo_rt.kernels.processors import select_attention  # noqa: E402
from emo_rt.kernels.testing import check_against_control  # noqa: E402
from emo_rt.models.unet import Backbone, ReferenceNet  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def no_tf32():
    """cuDNN convolutions default to TF32 on Ampere and later: the fp32 control must be fp32."""
    if not torch.cuda.is_available():
        yield
        return
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_window_matches_torch_processors(tiny_config, no_tf32):
    # 32x32 frames -> 4x4 latents, fewer heads (the layer tests cover heads): every temporal and
    # reference layer runs, at interpreter speed (~130 temporal + ~110 reference programs)
    config = dataclasses.replace(
        tiny_config, resolution=32,
        unet=dataclasses.replace(tiny_config.unet, num_attention_heads=2),
        temporal=dataclasses.replace(tiny_config.temporal, num_attention_heads=1))
    f, n, h, c = config.num_frames, config.num_motion_frames, config.latent_size, config.vae.latent_channels
    torch.manual_seed(0)
    backbone, reference_net = Backbone(config).eval().to(DEVICE), ReferenceNet(config).eval().to(DEVICE)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        inputs = dict(
            noisy_latents=torch.randn(1, c, f, h, h, generator=g),
            timestep=torch.tensor([500]),
            reference_features=reference_net.reference_features(torch.randn(1, c, h, h, generator=g).to(DEVICE)),
            motion_features=reference_net.motion_features(torch.randn(1, n, c, h, h, generator=g).to(DEVICE)),
            audio_tokens=torch.randn(1, f, config.audio.num_tokens, config.audio.token_dim, generator=g),
            speed_tokens=torch.randn(1, f, config.speed.num_tokens, config.speed.token_dim, generator=g),
            face_latents=torch.randn(1, c, h, h, generator=g),
        )
        inputs = {k: [t.to(DEVICE) for t in v] if isinstance(v, list) else v.to(DEVICE) for k, v in inputs.items()}
        truth = copy.deepcopy(backbone).double()(**{
            k: [t.double() for t in v] if isinstance(v, list) else
            (v.double() if v.is_floating_point() else v) for k, v in inputs.items()})
        control = backbone(**inputs)
        assert select_attention(backbone, "triton") == backbone.num_temporal_layers * 2 + (
            backbone.num_spatial_layers)
        result = backbone(**inputs)
    assert not result.isnan().any()
    check_against_control(result, control, truth)
