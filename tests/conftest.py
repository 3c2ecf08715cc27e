"""Shared fixtures: tiny configs and models built in the test, never downloaded."""

from __future__ import annotations

import os

import pytest
import torch

# Triton reads TRITON_INTERPRET when a kernel is decorated: set it before any test imports
# emo_rt.kernels, and only without CUDA, so a GPU run tests the compiled kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from emo_rt.config import tiny


@pytest.fixture(autouse=True, scope="session")
def _reference_cache_dir(tmp_path_factory):
    """`emo-rt render` keeps reference features on disk by default: keep the tests' out of ~/.cache."""
    os.environ["EMO_RT_CACHE_DIR"] = str(tmp_path_factory.mktemp("reference-cache"))
    yield


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_config():
    return tiny()


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    from emo_rt.models import EmoModel

    torch.manual_seed(1234)
    return EmoModel(tiny_config).eval()
