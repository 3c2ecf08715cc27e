"""Shipping a trained run as the packaged model: fp16, scheduler kept, size-limited, atomic."""

import json

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors import safe_open

from emo_rt.config import tiny
from emo_rt.errors import EmoError
from emo_rt.models import EmoModel
from emo_rt.schedulers import noise_schedule
from emo_rt.training.ship import ship


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model_dir = EmoModel(tiny()).save_pretrained(run / "stage3" / "model")
    DDPMScheduler(prediction_type="v_prediction").save_pretrained(model_dir / "scheduler")
    info = {"stage": 3, "steps": 5, "global_batch": 4, "processes": 2, "median_step_s": 1.0,
            "seconds_this_run": 7.0, "recipe": {"model": "tiny"}}
    (model_dir / "training.json").write_text(json.dumps(info))
    return run


def test_ship_writes_fp16_model_with_its_scheduler(run_dir, tmp_path):
    out = ship(run_dir, tmp_path / "default_model")
    with safe_open(str(out / "backbone.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    assert noise_schedule(out)["prediction_type"] == "v_prediction"
    assert json.loads((out / "training.json").read_text())["stages"][0]["steps"] == 5
    source = EmoModel.from_pretrained(run_dir / "stage3" / "model")
    shipped = EmoModel.from_pretrained(out)
    for (name, a), (_, b) in zip(source.state_dict().items(), shipped.state_dict().items()):
        torch.testing.assert_close(b, a.half().float() if a.is_floating_point() else a, rtol=0, atol=0, msg=name)


def test_over_the_size_limit_leaves_nothing(run_dir, tmp_path):
    with pytest.raises(EmoError, match="over the 1 MB limit"):
        ship(run_dir, tmp_path / "default_model", max_mb=1)
    assert list(tmp_path.iterdir()) == []


def test_unfinished_run_is_refused(tmp_path):
    with pytest.raises(EmoError, match="not a finished stage 3 model"):
        ship(tmp_path, tmp_path / "default_model")
