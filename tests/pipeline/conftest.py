"""Fixtures for render tests: a tiny random-init model directory, a portrait, audio files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image, ImageDraw

from emo_rt.config import tiny
from emo_rt.models import EmoModel


def draw_face(size: int = 256) -> np.ndarray:
    """A simply drawn face on a plain background (what the face detectors find)."""
    img = Image.new("RGB", (size, size), (70, 110, 150))
    d = ImageDraw.Draw(img)
    s = size / 256
    d.ellipse([68 * s, 40 * s, 188 * s, 200 * s], fill=(224, 180, 150))
    for x in (98, 158):
        d.ellipse([(x - 14) * s, 95 * s, (x + 14) * s, 111 * s], fill=(250, 250, 250))
        d.ellipse([(x - 6) * s, 97 * s, (x + 6) * s, 109 * s], fill=(60, 40, 30))
        d.line([(x - 16) * s, 84 * s, (x + 14) * s, 82 * s], fill=(80, 50, 30), width=max(1, int(4 * s)))
    d.line([128 * s, 110 * s, 122 * s, 140 * s, 132 * s, 142 * s], fill=(170, 120, 100), width=max(1, int(3 * s)))
    d.ellipse([106 * s, 155 * s, 150 * s, 172 * s], fill=(170, 70, 80))
    return np.asarray(img)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    EmoModel(tiny()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def portrait(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "ref.png"
    Image.fromarray(draw_face()).save(path)
    return path


def write_speech_like(path, seconds: float, rate: int = 22050, channels: int = 1, silent: bool = False):
    t = np.arange(int(round(seconds * rate))) / rate
    envelope = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)  # syllables at 3 Hz
    wave = 0.3 * envelope * np.sin(2 * np.pi * 180 * t) * (0 if silent else 1)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    sf.write(path, data.astype(np.float32), rate)
    return path


@pytest.fixture(scope="session")
def speech_1s(tmp_path_factory):
    """25 frames: four windows of the tiny model (f=8), the last one padded."""
    return write_speech_like(tmp_path_factory.mktemp("aud") / "short.wav", 1.0, rate=16000)


@pytest.fixture(scope="session")
def speech_3s3(tmp_path_factory):
    return write_speech_like(tmp_path_factory.mktemp("aud") / "a.wav", 3.3, rate=44100, channels=2)
