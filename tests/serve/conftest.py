"""Fixtures for the streaming API and `emo-rt serve`: a tiny random-init model with the prosody row
(each audio chunk's own voiced median then matters), a drawn portrait, speech-like audio."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image

from emo_rt.config import tiny
from emo_rt.models import EmoModel
from tests.pipeline.conftest import draw_face, write_speech_like


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a busy 2-core box two threads per op ran these renders several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def prosody_model_dir(tmp_path_factory):
    """A tiny model whose audio encoder appends the prosody row, as the shipped model's does."""
    config = tiny()
    config = replace(config, audio=replace(config.audio, prosody=True))
    path = tmp_path_factory.mktemp("prosody-model")
    torch.manual_seed(0)
    EmoModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def face_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve-img") / "face.png"
    Image.fromarray(draw_face()).save(path)
    return path


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory):
    """3.3 s at 44.1 kHz stereo: 83 frames, the last window padded; resampled on the way in."""
    return write_speech_like(tmp_path_factory.mktemp("serve-aud") / "speech.wav", 3.3, rate=44100, channels=2)
