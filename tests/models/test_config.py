import json

import pytest

from emo_rt.config import EmoConfig, sd15, tiny
from emo_rt.errors import WeightsError


@pytest.mark.parametrize("preset", [sd15, tiny])
def test_config_json_round_trip(preset, tmp_path):
    config = preset()
    config.save(tmp_path)
    assert EmoConfig.load(tmp_path) == config


def test_unknown_key_is_refused(tmp_path):
    data = tiny().to_dict()
    data["unet"]["block_out_chanels"] = [1, 2]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="config.json: unknown key 'unet.block_out_chanels'"):
        EmoConfig.load(tmp_path)


def test_a_missing_key_is_refused_by_name(tmp_path):
    """A model directory's config is written whole: a key it lacks is an error, never a default."""
    data = tiny().to_dict()
    del data["vae"]["scaling_factor"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="config.json: missing key 'vae.scaling_factor'"):
        EmoConfig.load(tmp_path)


def test_keys_added_since_a_model_was_written_are_migrated_explicitly(tmp_path):
    """Configs written before the autoencoder kinds (the first shipped model's) load as AutoencoderKL;
    only the keys listed in config.MIGRATIONS are filled, any other missing key is still refused."""
    data = tiny().to_dict()
    data["vae"] = {"block_out_channels": [16, 32, 64, 64], "layers_per_block": 1, "latent_channels": 4,
                   "norm_num_groups": 8, "scaling_factor": 0.5}  # as config.json was written then
    data["unet"].update(in_channels=4, out_channels=4)
    (tmp_path / "config.json").write_text(json.dumps(data))
    vae = EmoConfig.load(tmp_path).vae
    assert vae.kind == "kl" and vae.latent_channels == 4 and vae.downsample_factor == 8 and not vae.image_skip
    del data["vae"]["layers_per_block"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="missing key 'vae.layers_per_block'"):
        EmoConfig.load(tmp_path)


def test_a_wrong_type_is_refused_by_name():
    data = tiny().to_dict()
    data["num_frames"] = "eight"
    with pytest.raises(WeightsError, match="config: num_frames: expected an integer"):
        EmoConfig.from_dict(data)


def test_inconsistent_geometry_is_refused():
    with pytest.raises(ValueError, match="resolution"):
        EmoConfig(resolution=500)


def test_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="config.json"):
        EmoConfig.load(tmp_path)
