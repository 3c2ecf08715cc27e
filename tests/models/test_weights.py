"""Weight import round trips at tiny scale: weights made by diffusers' own classes load into ours
and give the same outputs on the shared path."""

import copy

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel

from emo_rt.config import tiny
from emo_rt.errors import WeightsError
from emo_rt.models import EmoModel
from emo_rt.models.conditioning import Conditioning
from emo_rt.models.weights import import_animatediff, import_sd15_unet


def diffusers_unet(config):
    u = config.unet
    unet = UNet2DConditionModel(
        sample_size=config.latent_size, in_channels=u.in_channels, out_channels=u.out_channels,
        block_out_channels=u.block_out_channels,
        layers_per_block=u.layers_per_block, norm_num_groups=u.norm_num_groups, cross_attention_dim=24,
        attention_head_dim=u.num_attention_heads,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in u.attention_levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(u.attention_levels)))
    # switch off the text path (emo-rt has none) so both models compute the same function
    for name, module in unet.named_modules():
        if name.endswith("attn2.to_out.0"):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    return unet


def diffusers_adapter(config):
    u, t = config.unet, config.temporal
    adapter = MotionAdapter(block_out_channels=u.block_out_channels, motion_layers_per_block=u.layers_per_block,
                            motion_num_attention_heads=t.num_attention_heads, motion_norm_num_groups=t.norm_num_groups,
                            motion_max_seq_length=t.max_positions, use_motion_mid_block=t.mid_block)
    for p in adapter.parameters():  # diffusers zero-inits proj_out; make every weight matter
        torch.nn.init.normal_(p, std=0.05)
    return adapter


def empty_features(model, config, batch):
    """Zero-length reference and motion features: the Backbone then computes plain self-/temporal attention."""
    h = config.latent_size
    ref = [torch.zeros(batch, 0, c) for c in _spatial_channels(model)]
    motion = model.reference_net.motion_features(torch.zeros(batch, 0, config.vae.latent_channels, h, h))
    return ref, motion


def _spatial_channels(model):
    return [m.norm1.normalized_shape[0] for m in model.backbone.modules() if type(m).__name__ == "SpatialBlock"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    torch.manual_seed(7)
    config = tiny()
    unet, adapter = diffusers_unet(config).eval(), diffusers_adapter(config).eval()
    root = tmp_path_factory.mktemp("weights")
    unet.save_pretrained(root / "unet")
    adapter.save_pretrained(root / "adapter")
    model = EmoModel(config).eval()
    sd_report = import_sd15_unet(model, root / "unet")
    ad_report = import_animatediff(model, root / "adapter")
    return config, unet, adapter, model, sd_report, ad_report


def test_report_names_fresh_layers(imported):
    _, unet, _, _, sd_report, ad_report = imported
    fresh = sd_report.fresh["backbone"]
    assert fresh and all(("audio_attn" in k or "norm_audio" in k) for k in fresh)
    assert sd_report.fresh["reference_net"] == []
    assert all(("attn2" in k or "norm2" in k) for k in sd_report.unused)
    assert len(sd_report.loaded["backbone"]) == len(unet.state_dict()) - len(sd_report.unused)
    assert all(("speed_attn" in k or "norm_speed" in k) for k in ad_report.fresh["backbone"])
    assert "freshly initialised (audio_attn, norm_audio)" in sd_report.summary()


def test_backbone_2d_path_equals_diffusers_unet(imported):
    config, unet, _, model, _, _ = imported
    backbone = copy.deepcopy(model.backbone)
    for name, module in backbone.named_modules():  # temporal modules off: identity residuals
        if "motion_modules" in name and name.endswith("proj_out"):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    b, f, h, c = 2, 3, config.latent_size, config.vae.latent_channels
    latents, t = torch.randn(b, c, f, h, h), torch.tensor([10, 700])
    ref, motion = empty_features(model, config, b)
    with torch.no_grad():
        frames = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, h)
        expected = unet(frames, t.repeat_interleave(f), encoder_hidden_states=torch.randn(b * f, 3, 24)).sample
        ours = backbone(latents, t, ref, motion, torch.randn(b, f, 4, 64), torch.randn(b, f, 1, 64),
                        model.face_locator(torch.rand(b, 1, config.resolution, config.resolution)))
    ours = ours.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, h)
    # identical maths up to float32 summation order: errors of order 1e-6 on outputs of order 1
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_temporal_module_equals_animatediff_without_motion_frames(imported):
    config, _, adapter, model, _, _ = imported
    ours, theirs = model.backbone.up_blocks[1].motion_modules[1], adapter.up_blocks[1].motion_modules[1]
    b, f, c, h = 2, 7, 64, 5
    x = torch.randn(b * f, c, h, h)
    speed = torch.randn(b, f, 1, 64)
    with torch.no_grad():
        expected = theirs(x, num_frames=f)
        out = ours(x, Conditioning(num_frames=f, motion_features=None, speed_tokens=speed))
    assert ours.transformer_blocks[0].speed_attn.to_out[0].weight.abs().sum() == 0  # zero-init: inert
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_reference_features_are_sd_self_attention_inputs(imported):
    config, unet, _, model, _, _ = imported
    captured = []
    hooks = [m.register_forward_hook(lambda mod, args, out: captured.append(out))
             for name, m in unet.named_modules() if name.endswith("transformer_blocks.0.norm1")]
    latents = torch.randn(2, config.vae.latent_channels, config.latent_size, config.latent_size)
    with torch.no_grad():
        unet(latents, torch.zeros(2, dtype=torch.long), encoder_hidden_states=torch.zeros(2, 3, 24))
        ours = model.reference_net.reference_features(latents)
    for h in hooks:
        h.remove()
    assert len(ours) == len(captured) == model.backbone.num_spatial_layers
    for a, b in zip(ours, captured):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_original_animatediff_layout_loads(imported, tmp_path):
    config, _, adapter, _, _, _ = imported
    original = {}
    for k, v in adapter.state_dict().items():  # the inverse of diffusers' converter
        k = (k.replace("transformer_blocks.0.norm1", "transformer_blocks.0.norms.0")
             .replace("transformer_blocks.0.norm2", "transformer_blocks.0.norms.1")
             .replace("transformer_blocks.0.norm3", "transformer_blocks.0.ff_norm")
             .replace("transformer_blocks.0.attn1", "transformer_blocks.0.attention_blocks.0")
             .replace("transformer_blocks.0.attn2", "transformer_blocks.0.attention_blocks.1")
             .replace("motion_modules.", "motion_modules.").replace(".norm.", ".temporal_transformer.norm.")
             .replace(".proj_in.", ".temporal_transformer.proj_in.")
             .replace(".proj_out.", ".temporal_transformer.proj_out.")
             .replace(".transformer_blocks.", ".temporal_transformer.transformer_blocks."))
        original[k] = v
    torch.save(original, tmp_path / "mm_sd_v15_v2.ckpt")
    model = EmoModel(config)
    report = import_animatediff(model, tmp_path / "mm_sd_v15_v2.ckpt")
    assert len(report.loaded["backbone"]) == len(adapter.state_dict())
    for k, v in adapter.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v)


def test_shape_mismatch_is_refused(imported, tmp_path):
    _, unet, _, _, _, _ = imported
    unet.save_pretrained(tmp_path / "unet")
    other = tiny()
    bigger = EmoModel(type(other)(**{**other.__dict__, "unet": type(other.unet)(
        **{**other.unet.__dict__, "block_out_channels": (32, 64, 256)})}))
    with pytest.raises(WeightsError, match="shape mismatch"):
        import_sd15_unet(bigger, tmp_path / "unet")


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="no weights found"):
        import_sd15_unet(EmoModel(tiny()), tmp_path)


def test_a_backbone_with_the_anchor_imports_sd_and_starts_as_sd(imported, tmp_path):
    """EmoConfig.anchor doubles the Backbone's conv_in input: SD's kernel fills the noisy latents'
    channels and the anchor's start at zero, so the imported net ignores the anchor until trained."""
    import dataclasses

    config, unet, _, plain, _, _ = imported
    unet.save_pretrained(tmp_path / "unet")
    torch.manual_seed(7)
    model = EmoModel(dataclasses.replace(config, anchor="residual")).eval()
    report = import_sd15_unet(model, tmp_path / "unet")
    assert "conv_in.weight (the anchor's input channels, zeros)" in report.fresh["backbone"]
    c = config.vae.latent_channels
    assert torch.equal(model.backbone.conv_in.weight[:, :c], plain.backbone.conv_in.weight)
    assert model.backbone.conv_in.weight[:, c:].abs().max() == 0
