"""Fixtures and helpers of the command-line tests: every command runs through the installed
`emo-rt` script in a subprocess, as a user or a service manager runs it, on tiny inputs made here
(a random-init tiny model from `emo-rt new-model`, a drawn portrait, a short wav, a 3-clip
synthetic corpus from `emo-rt synth-data`) with one torch thread."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.pipeline.conftest import draw_face, write_speech_like

EMO_RT = shutil.which("emo-rt")
# one thread per process: these tests share a 2-core machine with each other and with other jobs
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
RUN_TIMEOUT = 600  # s: a hung command fails its test instead of the whole run


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def emo_lines(self) -> list[str]:
        """The lines emo-rt itself wrote to stderr, warnings excepted (native libraries such as
        mediapipe's face detector also write there)."""
        return [line for line in self.stderr.splitlines()
                if line.startswith("emo-rt:") and not line.startswith("emo-rt: warning")]


def emo_rt(*args, cwd: Path | None = None, env: dict | None = None, timeout: float = RUN_TIMEOUT) -> Result:
    """Run `emo-rt ARGS...` and wait for it."""
    assert EMO_RT is not None, "the emo-rt console script is not on PATH: pip install -e '.[dev]'"
    done = subprocess.run([EMO_RT, *map(str, args)], cwd=cwd, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


def assert_ok(result: Result) -> None:
    assert result.code == 0 and not result.emo_lines, f"exit {result.code}\n{result.stderr[-3000:]}"


def assert_error(result: Result, *words: str, code: int = 2, only_line: bool = False) -> str:
    """Exit `code`, exactly one `emo-rt: error:` line (containing `words`), no traceback; with
    `only_line` nothing else on stderr at all (errors found before any native library loads)."""
    lines = result.emo_lines
    assert result.code == code and len(lines) == 1 and lines[0].startswith("emo-rt: error: "), \
        f"exit {result.code}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if only_line:
        assert result.stderr.strip() == lines[0], result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def files_under(folder: Path) -> list[str]:
    """Every file and folder below `folder` (relative paths, sorted); [] for a missing folder."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")) if Path(folder).exists() else []


def partials_under(folder: Path) -> list[str]:
    """The temporary names the atomic writers use (emo_rt.io.files: `.<stem>.<random>.part<ext>`,
    `.<dir>.partial`) and the ONNX exporter's `.<name>.onnx.tmp`, anywhere below `folder`."""
    return [p for p in files_under(folder)
            if any(mark in Path(p).name for mark in (".part", ".partial", ".tmp", ".probe"))]


# ---- interrupting a running command --------------------------------------------------------------
def live_members(group: int) -> list[int]:
    """Processes of process group `group` that are still running (zombies are dead already)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def interrupt(args, signum: int, ready: Callable[[], bool], cwd: Path | None = None, env: dict | None = None,
              start_timeout: float = 300, stop_timeout: float = 60, stdout: Path | None = None) -> Result:
    """Start `emo-rt ARGS...` in its own session, wait until `ready()`, send it `signum` (to the
    process alone, as `kill PID`, a service manager or a job scheduler does), and wait for it.
    Fails if the command ends before it is ready, or if any process it started outlives it. With
    `stdout`, the command prints into that file, so that `ready()` can watch its progress."""
    assert EMO_RT is not None
    with open(stdout, "w") if stdout is not None else contextlib.nullcontext(subprocess.PIPE) as sink:
        process = subprocess.Popen([EMO_RT, *map(str, args)], cwd=cwd, env=env or ENV, stdout=sink,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout
        while not ready():
            if process.poll() is not None:
                out, err = process.communicate()
                pytest.fail(f"emo-rt {args[0]} ended (exit {process.returncode}) before it was interrupted:\n"
                            f"{err[-3000:]}")
            assert time.monotonic() < deadline, f"emo-rt {args[0]} was not ready in {start_timeout} s"
            time.sleep(0.02)
        process.send_signal(signum)
        out, err = process.communicate(timeout=stop_timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if stdout is not None:
        out = Path(stdout).read_text()
    deadline = time.monotonic() + 10  # stopped workers may take a moment to be reaped
    while live_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not live_members(process.pid), f"processes left running: {live_members(process.pid)}"
    return Result(process.returncode, out, err)


EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
SIGNAL_LINES = {signal.SIGINT: "emo-rt: interrupted", signal.SIGTERM: "emo-rt: terminated"}


def assert_stopped(result: Result, signum: int) -> None:
    """The exit code of `signum` and its one line (`emo-rt: interrupted` / `emo-rt: terminated`)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("emo-rt:")
             and not line.startswith("emo-rt: warning")]
    assert result.code == EXIT_CODES[signum] and len(lines) == 1 and lines[0].startswith(SIGNAL_LINES[signum]), \
        f"exit {result.code}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def appeared(folder: Path, pattern: str) -> Callable[[], bool]:
    return lambda: Path(folder).is_dir() and any(Path(folder).glob(pattern))


SIGNALS = pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])


# ---- inputs ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A random-init tiny model, written by `emo-rt new-model` (its happy path)."""
    path = tmp_path_factory.mktemp("cli") / "model"
    result = emo_rt("new-model", path, "--preset", "tiny", "--seed", "0")
    assert_ok(result)
    return path


@pytest.fixture(scope="session")
def portrait(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli_in") / "ref.png"
    Image.fromarray(draw_face(128)).save(path)
    return path


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Path:
    """0.4 s: 10 frames, two windows of the tiny model."""
    return write_speech_like(tmp_path_factory.mktemp("cli_in") / "speech.wav", 0.4, rate=16000)


@pytest.fixture(scope="session")
def long_speech(tmp_path_factory) -> Path:
    """20 s: long enough that a render is surely still running when the signal comes."""
    return write_speech_like(tmp_path_factory.mktemp("cli_in") / "long.wav", 20.0, rate=16000)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """3 synthetic clips x 1 s at 128 px (train, val and test one each), by `emo-rt synth-data`."""
    path = tmp_path_factory.mktemp("cli") / "corpus"
    assert_ok(emo_rt("synth-data", path, "--clips", "3", "--seconds", "1", "--size", "128", "--seed", "5",
                     "--workers", "2", "-q"))
    return path


@pytest.fixture(scope="session")
def shards(corpus, tmp_path_factory) -> Path:
    """The corpus preprocessed by `emo-rt preprocess` (mediapipe's face detector); its tests are slow."""
    pytest.importorskip("mediapipe", reason="preprocess finds faces with mediapipe (.ci/run installs it)")
    path = tmp_path_factory.mktemp("cli") / "shards"
    assert_ok(emo_rt("preprocess", corpus, path, "--workers", "1", "-q"))
    return path
