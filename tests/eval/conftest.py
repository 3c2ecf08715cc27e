"""Fixtures for the eval tests: a small synthetic corpus made here (CI has no corpus/ folder),
preprocessed into shards, and a tiny random-init model. The corpus seed differs from the shipped
evaluator's training corpus (seed 0), so every clip is a new identity, voice and sentence to it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

NUM_CLIPS, SECONDS, SIZE, RESOLUTION, SEED = 4, 3.0, 256, 128, 23  # splits: 2 train, 1 val, 1 test


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(shards, corpus) of 4 clips x 3 s."""
    pytest.importorskip("mediapipe")
    from emo_rt.training.data.preprocess import preprocess
    from emo_rt.training.data.synth import generate_corpus

    root = tmp_path_factory.mktemp("eval_corpus")
    corpus, shards = root / "synth", root / "shards"
    generate_corpus(corpus, NUM_CLIPS, seed=SEED, size=SIZE, seconds=SECONDS, workers=2, progress=False)
    report = preprocess(corpus, shards, resolution=RESOLUTION, workers=2, progress=False)
    assert report.kept_clips == NUM_CLIPS, report.summary()
    return shards, corpus


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from emo_rt.config import tiny
    from emo_rt.models import EmoModel

    path = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    EmoModel(tiny()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def evaluator():
    from emo_rt.eval.evaluator import Evaluator

    return Evaluator.from_pretrained()
