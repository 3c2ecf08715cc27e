"""Shared fixtures: tiny configs and models built in the test, never downloaded."""

from __future__ import annotations

import pytest
import torch

from emo_rt.config import tiny


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
