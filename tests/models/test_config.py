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
