"""The commands without a test file of their own here (`train`, `eval`, `bench`, `ship`, `model-card`,
`train-evaluator`, `serve`) through the installed script: bad arguments are one `emo-rt: error:`
line naming the argument and its valid range, exit 2, before any import of the model stack; bad
input is one line, exit 2, and no output folder is made. Their happy paths and signals are tested
beside their code (tests/training, tests/eval, tests/runtime, tests/serve); bench's and
train-evaluator's here (train-evaluator on the shared shards fixture)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

from emo_rt.eval.data import LABELS
from emo_rt.eval.evaluator import Evaluator
from tests.cli.conftest import (
    ENV,
    SIGNALS,
    appeared,
    assert_error,
    assert_ok,
    assert_stopped,
    emo_rt,
    files_under,
    interrupt,
)

BAD_ARGUMENTS = [
    (("train", "--recipe", "tiny", "--stage", "5", "--data", "d", "--out", "r"),
     "argument --stage: invalid choice: 5 (choose from 0, 1, 2, 3, 4)"),
    (("train", "--recipe", "tiny", "--stage", "x", "--data", "d", "--out", "r"), "argument --stage: invalid int value"),
    (("train", "--stage", "1", "--data", "d", "--out", "r"), "the following arguments are required: --recipe"),
    (("eval", "--data", "d", "--corpus", "c", "--out", "r", "--clip-seconds", "0"),
     "argument --clip-seconds: 0 is out of range: give a finite number > 0"),
    (("eval", "--data", "d", "--corpus", "c", "--out", "r", "--speeds", "1,nan"),
     "argument --speeds: nan is out of range: give a finite number >= 0 and <= 10"),
    (("eval", "--data", "d", "--corpus", "c", "--out", "r", "--steps", "0"), "argument --steps: 0 is out of range"),
    (("bench", "--steps", "0"), "argument --steps: 0 is out of range: give an integer >= 1 and <= 1000"),
    (("bench", "--cfg", "nan"), "argument --cfg: nan is out of range: give a finite number >= 0 and <= 30"),
    (("bench", "--seconds", "0"), "argument --seconds: 0 is out of range: give a finite number > 0 and <= 600"),
    (("bench", "--rounds", "0"), "argument --rounds"),
    (("bench", "--backend", "tensorrt"), "argument --backend: invalid choice: 'tensorrt'"),
    (("bench", "--weights", "w", "--preset", "tiny"), "argument --preset: not allowed with argument --weights"),
    (("ship", "run", "out", "--max-mb", "0"), "argument --max-mb: 0 is out of range: give a finite number > 0"),
    (("ship", "run", "out", "--stage", "7"), "argument --stage: invalid choice: 7"),
    (("model-card", "m", "--corpus", "c"), "the following arguments are required: --report"),
    (("model-card", "m", "--report", "r", "--corpus", "c", "--bogus"), "unrecognized arguments: --bogus"),
    (("train-evaluator", "--data", "d", "--corpus", "c", "--steps", "0"),
     "argument --steps: 0 is out of range: give an integer >= 1"),
    (("train-evaluator", "--data", "d", "--corpus", "c", "--lr", "nan"),
     "argument --lr: nan is out of range: give a finite number > 0 and <= 1"),
    (("train-evaluator", "--data", "d", "--corpus", "c", "--batch", "0"), "argument --batch"),
    (("train-evaluator", "--data", "d", "--corpus", "c", "--part", "mouth"), "argument --part: invalid choice"),
    (("serve", "--port", "0"), "argument --port: 0 is out of range: give an integer >= 1 and <= 65535"),
    (("serve", "--port", "70000"), "argument --port: 70000 is out of range"),
    (("serve", "--max-upload-mb", "nan"), "argument --max-upload-mb: nan is out of range"),
    (("serve", "--max-queue", "0"), "argument --max-queue"),
    (("serve", "--shutdown-grace", "-1"), "argument --shutdown-grace"),
    (("serve", "--audio-chunk-seconds", "0.01"), "argument --audio-chunk-seconds: 0.01 is out of range"),
]


@pytest.mark.parametrize("args, message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_argument(args, message, tmp_path):
    assert_error(emo_rt(*args, cwd=tmp_path), message, only_line=True)
    assert files_under(tmp_path) == []


def _bad_inputs(tmp):
    """(arguments, words of the error line) of each command, every path under `tmp` missing."""
    return {
        "train": (("train", "--recipe", tmp / "none.yaml", "--stage", "1", "--data", tmp, "--out", tmp / "run"),
                  ["recipe", "not found"]),
        "eval": (("eval", "--data", tmp / "none", "--corpus", tmp, "--out", tmp / "report", "-q"), ["--data"]),
        "bench": (("bench", "--weights", tmp / "none", "--out", tmp / "bench", "-q"),
                  ["model directory", "does not exist"]),
        "ship": (("ship", tmp / "run", tmp / "model"), ["not a finished stage 3 model"]),
        "model-card": (("model-card", tmp / "model", "--report", tmp / "report", "--corpus", tmp / "corpus"),
                       ["eval report not found"]),
        "train-evaluator": (("train-evaluator", "--data", tmp / "none", "--corpus", tmp / "corpus", "--out",
                             tmp / "evaluator", "-q"), ["data folder", "not found"]),
        "serve": (("serve", "--portraits", tmp / "none", "--port", "1"), ["--portraits", "not a directory"]),
    }


@pytest.mark.parametrize("command", ["train", "eval", "bench", "ship", "model-card", "train-evaluator", "serve"])
def test_bad_input_is_one_line_and_makes_no_folder(command, tmp_path):
    args, words = _bad_inputs(tmp_path)[command]
    assert_error(emo_rt(*args, cwd=tmp_path), *words)
    assert files_under(tmp_path) == []  # bench's --out, eval's report, the run directory: none made


def test_bench_quick_writes_its_files(tmp_path):
    """The happy path on a random-init tiny model (CI benchmarks the shipped model after the tests)."""
    result = emo_rt("bench", "--preset", "tiny", "--quick", "--threads", "1", "--out", tmp_path / "bench", "-q")
    assert_ok(result)
    assert files_under(tmp_path) == ["bench", "bench/bench.json", "bench/bench.png"]
    assert "torch + overlap" in result.stdout and f"wrote {tmp_path / 'bench' / 'bench.json'}" in result.stdout


@SIGNALS
def test_bench_signal_leaves_no_output_and_no_scratch(signum, tmp_path):
    """Ctrl-C / SIGTERM once the bench has made its scratch folder (a random-init tiny model is
    loaded and measured from there): exit 130 / 143, one line, no --out folder, TMPDIR empty."""
    tmp = tmp_path / "tmp"  # the command's TMPDIR: its scratch folders are seen, and must go
    tmp.mkdir()
    args = ("bench", "--preset", "tiny", "--quick", "--threads", "1", "--out", tmp_path / "bench")
    stopped = interrupt(args, signum, ready=appeared(tmp, "emo-rt-bench-????????"), env={**ENV, "TMPDIR": str(tmp)})
    assert_stopped(stopped, signum)
    assert files_under(tmp_path) == ["tmp"]


TINY_EVALUATOR = ("--steps", "3", "--batch", "4", "--identity-steps", "3")


@pytest.fixture(scope="module")
def trained_evaluator(shards, corpus, tmp_path_factory):
    """A 3 + 3-step `emo-rt train-evaluator` run into a new --out (its happy path)."""
    out = tmp_path_factory.mktemp("evaluator") / "evaluator"
    assert_ok(emo_rt("train-evaluator", "--data", shards, "--corpus", corpus, "--out", out, *TINY_EVALUATOR, "-q"))
    return out


@pytest.mark.slow  # the shards fixture: preprocess with mediapipe
def test_train_evaluator_writes_an_evaluator_that_loads(trained_evaluator, shards, corpus, tmp_path):
    """Both networks, their configs, training.json and the card, and they load and read frames; an
    --out that is a file is one line before any work."""
    assert files_under(trained_evaluator) == ["README.md", "evaluator.json", "evaluator.safetensors",
                                              "identity.json", "identity.safetensors", "training.json"]
    evaluator = Evaluator.from_pretrained(trained_evaluator)
    assert evaluator.identity is not None
    frames = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), np.uint8)
    assert evaluator.predict(frames).shape == (2, len(LABELS))
    training = json.loads((trained_evaluator / "training.json").read_text())
    assert training["steps"] == 3 and training["identity"]["steps"] == 3 and training["test"]["mouth_open"]["clips"] == 1
    assert (trained_evaluator / "README.md").read_text().startswith("# Face evaluator")
    taken = tmp_path / "taken"
    taken.write_text("x")
    assert_error(emo_rt("train-evaluator", "--data", shards, "--corpus", corpus, "--out", taken, "-q"), "--out")
    assert taken.read_text() == "x"


@pytest.mark.slow  # the shards fixture: preprocess with mediapipe
@SIGNALS
def test_train_evaluator_signal_leaves_the_out_as_it_was(signum, trained_evaluator, shards, corpus, tmp_path):
    """Stopped once the new label network is written, while the identity embedding trains (for
    hours): exit 130 / 143, one line, --out byte for byte as it was, no partial copy beside it."""
    out = tmp_path / "evaluator"
    shutil.copytree(trained_evaluator, out)
    before = {name: (out / name).read_bytes() for name in files_under(out)}
    args = ("train-evaluator", "--data", shards, "--corpus", corpus, "--out", out, "--steps", "3", "--batch", "4",
            "--seed", "1", "--identity-steps", "1000000")  # another seed: other label weights

    def labels_written() -> bool:  # into --out, or into a copy of it
        return any(path.read_bytes() != before["evaluator.safetensors"]
                   for path in tmp_path.rglob("evaluator.safetensors"))

    stopped = interrupt(args, signum, ready=labels_written)
    assert_stopped(stopped, signum)
    assert {name: (out / name).read_bytes() for name in files_under(out)} == before
    assert files_under(tmp_path) == ["evaluator", *(f"evaluator/{name}" for name in before)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_that_a_library_turns_into_its_own_error_still_ends_as_the_signal(signum, monkeypatch, capsys):
    """safetensors' loader, interrupted inside its callback, raises a ValueError instead of the
    KeyboardInterrupt (seen once in the SIGINT test above under load): the command still exits as the
    signal, with its one line. An error with no signal behind it is still an error."""
    import emo_rt.cli as cli

    def converts_the_signal(args):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises here
        except BaseException:
            raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from None

    monkeypatch.setattr(cli, "_info", converts_the_signal)
    assert cli.main(["info"]) == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"emo-rt: {'interrupted' if signum == signal.SIGINT else 'terminated'} " \
                                      "(no partial output was kept)"

    def plain_error(args):
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "_info", plain_error)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["info"])
