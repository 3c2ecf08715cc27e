"""Checkpoints and --resume: a run killed with SIGKILL, or stopped by Ctrl-C / SIGTERM through the
installed `emo-rt train`, continues on the same loss curve, and a checkpoint cut mid-write is never
loaded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from emo_rt.training import checkpoint as ckpt
from emo_rt.training.logs import read_losses
from emo_rt.training.plan import stage_paths
from emo_rt.training.trainer import train
from tests.cli.conftest import SIGNALS, assert_ok, assert_stopped, emo_rt, interrupt, partials_under
from tests.training.toy_data import toy_recipe, write_recipe


def _assert_same_curve(reference, resumed, steps):
    ref_steps, ref_loss = read_losses(stage_paths(reference, 1).log)
    got_steps, got_loss = read_losses(stage_paths(resumed, 1).log)
    assert list(ref_steps) == list(got_steps) == list(range(1, steps + 1))
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-5, atol=0)


def test_sigkill_then_resume_continues_the_same_curve(toy, new_run, tmp_path):
    steps = 8
    recipe = write_recipe(tmp_path / "r.yaml", toy_recipe(steps=steps, checkpoint_every=3))
    reference = new_run(tmp_path / "reference")
    train(recipe, 1, toy["data"], reference, progress=False)

    killed = new_run(tmp_path / "killed")
    first = stage_paths(killed, 1).checkpoints / ckpt.checkpoint_name(3)
    process = subprocess.Popen(
        [sys.executable, "-m", "emo_rt.training.trainer", "--recipe", str(recipe), "--stage", "1",
         "--data", str(toy["data"]), "--out", str(killed), "--no-progress"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not first.is_dir() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not stage_paths(killed, 1).model.exists()

    train(recipe, 1, toy["data"], killed, resume=True, progress=False)
    _assert_same_curve(reference, killed, steps)


@SIGNALS
def test_signal_stops_train_and_resume_continues_the_same_curve(signum, toy, new_run, tmp_path):
    """`emo-rt train` stopped after its first checkpoint: one line, exit 130 / 143, its DataLoader
    worker gone with it (interrupt() checks), no temporary checkpoint, no stage output; the
    checkpoint it kept resumes (`emo-rt train --resume`) on the uninterrupted run's loss curve."""
    steps = 8
    recipe = write_recipe(tmp_path / "r.yaml", toy_recipe(steps=steps, checkpoint_every=3, num_workers=1))
    reference = new_run(tmp_path / "reference")
    train(recipe, 1, toy["data"], reference, progress=False)

    stopped = new_run(tmp_path / "stopped")
    first = stage_paths(stopped, 1).checkpoints / ckpt.checkpoint_name(3)
    args = ("train", "--recipe", recipe, "--stage", "1", "--data", toy["data"], "--out", stopped, "--no-progress")
    assert_stopped(interrupt(args, signum, ready=first.is_dir), signum)
    assert partials_under(stopped) == [] and not stage_paths(stopped, 1).model.exists()
    assert ckpt.latest_checkpoint(stage_paths(stopped, 1).checkpoints) is not None  # what --resume starts from

    assert_ok(emo_rt(*args, "--resume"))
    _assert_same_curve(reference, stopped, steps)


def test_checkpoint_cut_mid_write_is_never_loaded(toy, new_run, tmp_path, monkeypatch):
    steps = 6
    recipe = write_recipe(tmp_path / "r.yaml", toy_recipe(steps=steps, checkpoint_every=2, keep_checkpoints=5))
    reference = new_run(tmp_path / "reference")
    train(recipe, 1, toy["data"], reference, progress=False)

    # the process is interrupted while writing checkpoint 4: state.pt is half written, nothing was renamed
    cut = new_run(tmp_path / "cut")
    save = torch.save

    def dying_save(obj, path, *args, **kwargs):
        save(obj, path, *args, **kwargs)
        if "step-00000004" in str(path):
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
            raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, 1, toy["data"], cut, progress=False)
    monkeypatch.setattr(ckpt.torch, "save", save)
    checkpoints = stage_paths(cut, 1).checkpoints
    assert not (checkpoints / ".step-00000004.partial").exists()  # an interrupted write cleans up after itself
    assert ckpt.latest_checkpoint(checkpoints).name == "step-00000002"
    # what a SIGKILL mid-write leaves (no cleanup can run): a partial directory, never listed
    shutil.copytree(checkpoints / "step-00000002", checkpoints / ".step-00000004.partial")
    (checkpoints / ".step-00000004.partial" / "state.pt").write_bytes(b"half")
    assert ckpt.latest_checkpoint(checkpoints).name == "step-00000002"

    # a committed checkpoint whose file was cut afterwards (manifest disagrees) is skipped too
    shutil.copytree(checkpoints / "step-00000002", checkpoints / "step-00000003")
    (checkpoints / "step-00000003" / "state.pt").write_bytes(b"cut")
    skipped = []
    assert ckpt.latest_checkpoint(checkpoints, warn=skipped.append).name == "step-00000002"
    assert "state.pt" in skipped[0]
    shutil.rmtree(checkpoints / "step-00000003")

    train(recipe, 1, toy["data"], cut, resume=True, progress=False)
    _assert_same_curve(reference, cut, steps)
    assert not (checkpoints / ".step-00000004.partial").exists()  # rewritten and committed
    assert [p.name for p in ckpt.list_checkpoints(checkpoints)] == ["step-00000002", "step-00000004", "step-00000006"]
