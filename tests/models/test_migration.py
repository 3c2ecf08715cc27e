"""emo_rt.models.migration: a saved model directory as the start of a later training stage."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emo_rt.config import EmoConfig, tiny
from emo_rt.errors import WeightsError
from emo_rt.models import EmoModel
from emo_rt.models.migration import config_changes, is_model_dir, load_for_stage, set_scaling_factor


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small model with the prosody row and a fitted VAE scale, as stage 1 leaves one."""
    base = tiny()
    config = dataclasses.replace(base, resolution=64, num_frames=2, num_motion_frames=1,
                                 audio=dataclasses.replace(base.audio, prosody=True))
    torch.manual_seed(0)
    model = EmoModel(config)
    set_scaling_factor(model, 0.7)
    return model.save_pretrained(tmp_path_factory.mktemp("migration") / "model")


def test_a_stage_adopts_only_config_fields_no_earlier_stage_trained(saved):
    """Stage 2 may toggle the prosody row and move the speed buckets (the audio projector is
    re-initialised, every trained part loads); stage 3 may move the buckets but not toggle the row
    (stage 2 trained the projector), and no stage may change the UNet."""
    config = EmoConfig.load(saved)
    buckets = dict(bucket_centres=tuple(c + 0.01 for c in config.speed.bucket_centres))
    wanted = dataclasses.replace(config, audio=dataclasses.replace(config.audio, prosody=False),
                                 speed=dataclasses.replace(config.speed, **buckets))
    wanted = dataclasses.replace(wanted, vae=dataclasses.replace(wanted.vae, scaling_factor=1.0))  # the preset's
    assert config_changes(config, wanted) == ["audio.prosody", "speed.bucket_centres"]
    adopted, note = load_for_stage(saved, wanted, 2)
    assert "audio.prosody" in note and "re-initialised: audio_projector" in note
    before = EmoModel.from_pretrained(saved)
    assert not adopted.config.audio.prosody and adopted.config.speed.bucket_centres == buckets["bucket_centres"]
    assert adopted.config.vae.scaling_factor == 0.7  # stage 0's fit is kept
    for part in ("backbone", "reference_net", "vae", "face_locator", "audio_encoder", "speed_encoder"):
        a, b = getattr(adopted, part).state_dict(), getattr(before, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    projector = adopted.audio_projector.proj[0].weight.shape[1]
    assert projector == before.audio_projector.proj[0].weight.shape[1] * 2 // 3  # 3 rows -> 2 rows

    speed_only = dataclasses.replace(config, speed=wanted.speed)
    assert load_for_stage(saved, speed_only, 3)[0].config.speed == wanted.speed
    with pytest.raises(WeightsError, match="audio.prosody differ"):
        load_for_stage(saved, wanted, 3)
    wider = dataclasses.replace(config, unet=dataclasses.replace(config.unet, num_attention_heads=1))
    with pytest.raises(WeightsError, match="unet.num_attention_heads differ"):
        load_for_stage(saved, wider, 2)


def test_the_same_config_loads_the_saved_model_as_it_is(saved):
    model, note = load_for_stage(saved, EmoConfig.load(saved), 3)
    assert note == "" and is_model_dir(saved)
    before = EmoModel.from_pretrained(saved).state_dict()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
