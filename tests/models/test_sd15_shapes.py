"""The sd15 preset is shaped exactly like SD1.5's UNet, AnimateDiff v2's motion modules,
wav2vec2-base and SD's VAE: compared key by key on the meta device (no allocation)."""

import pytest
import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from transformers import Wav2Vec2Config, Wav2Vec2Model

from emo_rt.config import sd15
from emo_rt.models import EmoModel
from emo_rt.models.weights import SD15_DIFFUSERS_UNET_CONFIG

TEXT_PATH = ("attn2.", "norm2.")  # SD1.5's text cross-attention: emo-rt has no text path


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def meta_models():
    with torch.device("meta"):
        ours = EmoModel(sd15())
        sd_unet = UNet2DConditionModel(**SD15_DIFFUSERS_UNET_CONFIG)
        adapter = MotionAdapter(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                                motion_mid_block_layers_per_block=1, motion_num_attention_heads=8,
                                motion_norm_num_groups=32, motion_max_seq_length=32,
                                use_motion_mid_block=True)
    return ours, sd_unet, adapter


def spatial_text_free(keys):
    return {k for k in keys if not any(f"transformer_blocks.0.{p}" in k for p in TEXT_PATH)}


def test_backbone_2d_part_matches_sd15_unet(meta_models):
    ours, sd_unet, _ = meta_models
    sd = shapes(sd_unet)
    backbone = shapes(ours.backbone)
    expected = spatial_text_free(sd)
    assert len(expected) == len(sd) - 16 * 7  # 16 transformer blocks x (norm2 w/b + attn2 5 tensors)
    missing = sorted(k for k in expected if k not in backbone)
    assert not missing, missing[:5]
    assert {k: sd[k] for k in expected} == {k: backbone[k] for k in expected}
    # what the backbone adds on top of the 2D part is only EMO's new layers and the motion modules
    extra = set(backbone) - set(sd)
    assert all(("audio_attn" in k or "norm_audio" in k or "motion_modules" in k) for k in extra)


def test_reference_net_matches_sd15_unet_without_head(meta_models):
    ours, sd_unet, _ = meta_models
    sd = shapes(sd_unet)
    ref = shapes(ours.reference_net)
    expected = {k for k in spatial_text_free(sd) if not k.startswith(("conv_norm_out", "conv_out"))}
    assert set(ref) == expected
    assert all(ref[k] == sd[k] for k in expected)


def test_temporal_part_matches_animatediff_v2(meta_models):
    ours, _, adapter = meta_models
    motion = shapes(adapter)
    backbone = shapes(ours.backbone)
    assert len([k for k in motion if k.endswith("proj_out.weight")]) == 21  # 8 down + 1 mid + 12 up
    assert {k: backbone.get(k) for k in motion} == motion
    ours_motion = {k for k in backbone if "motion_modules" in k}
    extra = ours_motion - set(motion)
    assert extra and all("speed_attn" in k or "norm_speed" in k for k in extra)


def test_audio_encoder_is_wav2vec2_base(meta_models):
    ours, _, _ = meta_models
    with torch.device("meta"):
        base = Wav2Vec2Model(Wav2Vec2Config())  # transformers' defaults are wav2vec2-base's shape
    assert shapes(ours.audio_encoder.wav2vec2) == shapes(base)


def test_vae_is_sd_vae(meta_models):
    ours, _, _ = meta_models
    with torch.device("meta"):
        sd_vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4,
                               up_block_types=("UpDecoderBlock2D",) * 4,
                               block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512)
    assert shapes(ours.vae) == shapes(sd_vae)
    assert ours.vae.config.scaling_factor == 0.18215


def test_sd15_layer_counts(meta_models):
    ours, _, _ = meta_models
    assert ours.backbone.num_spatial_layers == 16
    assert ours.backbone.num_temporal_layers == 21
