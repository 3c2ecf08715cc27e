"""Fixtures of the trainer tests: one toy run through stages 0-3, shared on disk by the modules."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from emo_rt.training.plan import stage_paths
from tests.training.toy_data import ensure_toy_run


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy shards and one run through stages 0-3 (3 steps each), on one thread."""
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # also for the processes the tests start
    try:
        yield ensure_toy_run(tmp_path_factory.getbasetemp() / "emo_rt_toy_run")
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture
def new_run(toy):
    """new_run(path): a run directory holding the toy run's stage 0 output, ready for stage 1."""

    def make(path):
        shutil.copytree(stage_paths(toy["run"], 0).model, stage_paths(path, 0).model)
        return path

    return make
