"""Runtime tests share the render fixtures: a tiny random-init model directory, a portrait, audio."""

from tests.pipeline.conftest import model_dir, portrait, speech_1s  # noqa: F401  (fixtures)
