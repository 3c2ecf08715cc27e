"""Runtime tests share the render fixtures: a tiny random-init model directory, a portrait, audio."""

import pytest

from emo_rt.models import EmoModel
from emo_rt.pipeline import load_inputs
from tests.pipeline.conftest import model_dir, portrait, speech_1s  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def model(model_dir):  # noqa: F811
    return EmoModel.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def inputs(portrait, speech_1s, model):  # noqa: F811
    return load_inputs(portrait, speech_1s, model.config.resolution, model.config.fps)
