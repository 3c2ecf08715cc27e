"""Fixtures for emo_rt.io tests: synthetic audio files, espeak-ng speech, a real portrait."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from io_helpers import write_audio


@pytest.fixture
def make_audio(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, samples: np.ndarray, rate: int) -> Path:
        return write_audio(tmp_path / name, samples, rate)

    return make


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A few seconds of espeak-ng speech (22.05 kHz mono; energy up to its Nyquist), or None."""
    if shutil.which("espeak-ng") is None:
        return None
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = "The quick brown fox jumps over the lazy dog. Audio driven portrait video."
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def grace_hopper_path() -> Path:
    """A real portrait photo that ships with matplotlib (a core dependency): 512x600 jpg."""
    cbook = pytest.importorskip("matplotlib.cbook")
    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
