"""`emo-rt new-model`, `info` and `build-engines` through the installed script; build-engines with
a real ONNX export of the tiny preset, interrupted twice (SIGTERM, then Ctrl-C) and resumed, then
rendered with --backend onnxruntime."""

from __future__ import annotations

import json
import signal

import pytest

from emo_rt.models import EmoModel
from tests.cli.conftest import (
    appeared,
    assert_error,
    assert_ok,
    assert_stopped,
    emo_rt,
    files_under,
    interrupt,
    partials_under,
)

PARTS = sorted(f"{part}.safetensors" for part in EmoModel.PARTS)


# ---- new-model -----------------------------------------------------------------------------------
def test_new_model_writes_a_complete_model(model_dir):
    assert files_under(model_dir) == sorted(["config.json", *PARTS])
    assert json.loads((model_dir / "config.json").read_text())["resolution"] == 128  # the tiny preset


@pytest.mark.parametrize("more, message", [(("--preset", "huge"), "argument --preset: invalid choice: 'huge'"),
                                           (("--seed", "-1"), "argument --seed: -1 is out of range"),
                                           (("--seed", "x"), "argument --seed: expected an integer")])
def test_new_model_bad_argument(more, message, tmp_path):
    assert_error(emo_rt("new-model", tmp_path / "m", *more), message, only_line=True)
    assert files_under(tmp_path) == []


def test_new_model_bad_output(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert_error(emo_rt("new-model", taken), "exists and is not empty", only_line=True)
    assert files_under(taken) == ["notes.txt"]  # not overwritten
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_error(emo_rt("new-model", a_file / "m"), "is not a directory", only_line=True)
    assert_error(emo_rt("new-model", tmp_path / "m", "--sd15-unet", tmp_path / "none"), "no weights found in")
    assert files_under(tmp_path) == ["file", "taken", "taken/notes.txt"]


# ---- info ------------------------------------------------------------------------------------------
def test_info_lists_the_presets():
    result = emo_rt("info")
    assert_ok(result)
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {"tiny", "sd15"} and rows["tiny"][-1] == "12.3M" and rows["sd15"][-1] == "2413.5M"


def test_info_bad_argument():
    assert_error(emo_rt("info", "--preset", "tiny"), "unrecognized arguments: --preset", only_line=True)


# ---- build-engines -------------------------------------------------------------------------------
@pytest.mark.parametrize("more, message", [(("--precision", "fp8"), "argument --precision: invalid choice"),
                                           (("--backend", "openvino"), "argument --backend: invalid choice")])
def test_build_engines_bad_argument(more, message, tmp_path):
    assert_error(emo_rt("build-engines", "--out", tmp_path / "e", *more), message, only_line=True)
    assert files_under(tmp_path) == []


def test_build_engines_bad_input(tmp_path):
    assert_error(emo_rt("build-engines", "--weights", tmp_path / "none", "--out", tmp_path / "e", "-q"),
                 "config.json not found")
    (tmp_path / "file").write_text("x")
    assert_error(emo_rt("build-engines", "--out", tmp_path / "file", "-q"), "--out", "is not a directory",
                 only_line=True)
    assert files_under(tmp_path) == ["file"]


def _entries(engines) -> dict:
    manifest = engines / "manifest.json"
    return json.loads(manifest.read_text())["engines"] if manifest.is_file() else {}


def _assert_consistent(engines) -> None:
    """No temporary file, and every file is one a manifest entry names (with the manifest itself)."""
    assert partials_under(engines) == []
    named = {name for entry in _entries(engines).values() for name in entry["files"]}
    assert set(files_under(engines)) == named | {"manifest.json"}


@pytest.mark.slow  # a real export of the tiny preset's nine networks: 3 min of CPU, 12 min beside other jobs
def test_build_engines_interrupted_resumed_and_rendered(model_dir, portrait, speech, tmp_path):
    engines = tmp_path / "engines"
    args = ("build-engines", "--weights", model_dir, "--out", engines, "-q")
    # SIGTERM once the first engine is recorded; Ctrl-C once the second is
    stopped = interrupt(args, signal.SIGTERM, ready=lambda: len(_entries(engines)) >= 1)
    assert_stopped(stopped, signal.SIGTERM)
    _assert_consistent(engines)
    first = set(_entries(engines))
    stopped = interrupt(args, signal.SIGINT, ready=lambda: len(_entries(engines)) > len(first))
    assert_stopped(stopped, signal.SIGINT)
    _assert_consistent(engines)
    kept = set(_entries(engines))
    assert first < kept

    finished = emo_rt(*args)
    assert_ok(finished)
    reused = [line.split()[0] for line in finished.stdout.splitlines()[1:] if line.split()[1] == "reused"]
    assert {f"onnxruntime/fp32/{name}" for name in reused} == kept  # what was finished is not redone
    assert len(_entries(engines)) == 9 and "9 built" not in finished.stdout
    _assert_consistent(engines)

    out = tmp_path / "out"
    out.mkdir()
    rendered = emo_rt("render", portrait, speech, "-o", out / "video.mp4", "--weights", model_dir, "--steps", "1",
                      "--cfg", "1", "--threads", "1", "--backend", "onnxruntime", "--engines", engines, "-q")
    assert_ok(rendered)
    assert "CPUExecutionProvider" in rendered.stdout and files_under(out) == ["video.mp4"]
