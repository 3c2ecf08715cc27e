"""`emo-rt synth-data` and `emo-rt preprocess` through the installed script: a corpus and its
shards, bad arguments and input, and Ctrl-C / SIGTERM mid-run: the worker processes stop with the
command, their temporary files go, finished work stays, and a rerun completes the rest."""

from __future__ import annotations

import json
import shutil

import pytest

from emo_rt.io.shards import ShardIndex
from tests.cli.conftest import (
    SIGNALS,
    appeared,
    assert_error,
    assert_ok,
    assert_stopped,
    emo_rt,
    files_under,
    interrupt,
    partials_under,
)


# ---- synth-data ----------------------------------------------------------------------------------
def test_synth_data_writes_the_corpus(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["splits"] == {"train": ["c00000"], "val": ["c00001"], "test": ["c00002"]}
    assert files_under(corpus) == ["clips", *(f"clips/c0000{i}{ext}" for i in range(3)
                                              for ext in (".json", ".mp4", ".wav")), "manifest.json"]


SYNTH_BAD_ARGUMENTS = [
    (("--clips", "0"), "argument --clips: 0 is out of range: give an integer >= 1"),
    (("--size", "65"), "argument --size: 65 is out of range: give an even integer >= 64 and <= 2048"),
    (("--size", "32"), "argument --size"),
    (("--seconds", "0.1"), "argument --seconds: 0.1 is out of range: give a finite number >= 0.5 and <= 600"),
    (("--seconds", "nan"), "argument --seconds"),
    (("--seconds", "3", "2"), "argument --seconds: give one value or MIN MAX with MIN <= MAX, got 3 2"),
    (("--seconds", "1", "2", "3"), "argument --seconds: give one value or MIN MAX"),
    (("--workers", "0"), "argument --workers"),
    (("--seed", "-2"), "argument --seed"),
]


@pytest.mark.parametrize("more, message", SYNTH_BAD_ARGUMENTS, ids=[" ".join(m) for m, _ in SYNTH_BAD_ARGUMENTS])
def test_synth_data_bad_argument(more, message, tmp_path):
    assert_error(emo_rt("synth-data", tmp_path / "c", "--clips", "3", *more), message, only_line=True)
    assert files_under(tmp_path) == []


def test_synth_data_bad_output(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_error(emo_rt("synth-data", tmp_path / "file", "--clips", "3", "-q"), "cannot make the corpus folder")
    assert files_under(tmp_path) == ["file"]


@SIGNALS
def test_synth_data_signal_stops_the_workers(signum, tmp_path):
    corpus = tmp_path / "corpus"
    args = ("synth-data", corpus, "--clips", "6", "--seconds", "3", "--size", "128", "--workers", "2", "-q")
    stopped = interrupt(args, signum, ready=appeared(corpus / "clips", ".c*.part.mp4"))  # workers rendering
    assert_stopped(stopped, signum)  # interrupt() checked that no worker outlived the command
    assert partials_under(corpus) == [] and not (corpus / "manifest.json").exists()
    kept = {p for p in files_under(corpus / "clips") if p.endswith(".json")}  # a sidecar is a clip's last file
    assert len(kept) < 6

    resumed = emo_rt(*args)
    assert_ok(resumed)
    assert len(json.loads((corpus / "manifest.json").read_text())["clips"]) == 6 and partials_under(corpus) == []


# ---- preprocess ----------------------------------------------------------------------------------
@pytest.mark.slow  # the shards fixture: preprocess with mediapipe
def test_preprocess_writes_shards(shards, corpus):
    index = ShardIndex(shards)
    assert sorted(c.id for c in index.clips) == ["c00000", "c00001", "c00002"]
    assert index.resolution == 128 and {c.split for c in index.clips} == {"train", "val", "test"}
    assert partials_under(shards) == [] and not (shards / ".work").exists()


@pytest.mark.parametrize("more, message", [(("--resolution", "31"), "argument --resolution: 31 is out of range"),
                                           (("--resolution", "12x"), "argument --resolution: expected an integer"),
                                           (("--workers", "-1"), "argument --workers")])
def test_preprocess_bad_argument(more, message, tmp_path):
    assert_error(emo_rt("preprocess", tmp_path, tmp_path / "out", *more), message, only_line=True)
    assert files_under(tmp_path) == []


@pytest.mark.slow  # the shards fixture: preprocess with mediapipe
def test_preprocess_bad_input(corpus, shards, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [((tmp_path / "none", tmp_path / "out1"), "input folder not found"),
             ((empty, tmp_path / "out2"), "no videos"),
             ((empty, tmp_path / "empty" / "x" / "y"), "no videos")]
    for args, message in cases:
        assert_error(emo_rt("preprocess", *args, "-q"), message)
    (tmp_path / "file").write_text("x")
    assert_error(emo_rt("preprocess", empty, tmp_path / "file", "-q"), "output folder", "is not a directory",
                 only_line=True)
    assert files_under(tmp_path) == ["empty", "file"]
    # shards of another resolution in OUT: refused, and left as they were
    other = tmp_path / "other"
    shutil.copytree(shards, other)
    before = {p: (other / p).read_bytes() for p in files_under(other) if (other / p).is_file()}
    assert_error(emo_rt("preprocess", tmp_path / "none2", other, "-q"), "input folder not found")
    assert_error(emo_rt("preprocess", corpus, other, "--resolution", "64", "-q"),
                 "holds shards at resolution 128")
    assert {p: (other / p).read_bytes() for p in files_under(other) if (other / p).is_file()} == before


@pytest.fixture(scope="module")
def longer_corpus(tmp_path_factory):
    """4 clips x 3 s: a preprocess run of it lasts long enough to be interrupted mid-way."""
    from emo_rt.training.data.synth import generate_corpus

    path = tmp_path_factory.mktemp("cli") / "longer"
    generate_corpus(path, 4, seed=6, size=128, seconds=3.0, workers=2, progress=False)
    return path


@pytest.mark.slow  # ~40 s beside other jobs: two runs with face detection
@SIGNALS
def test_preprocess_signal_keeps_finished_sources(signum, longer_corpus, tmp_path):
    pytest.importorskip("mediapipe", reason="preprocess finds faces with mediapipe (.ci/run installs it)")
    out = tmp_path / "shards"
    args = ("preprocess", longer_corpus, out, "--workers", "2", "-q")
    stopped = interrupt(args, signum, ready=appeared(out / ".work", "*"))  # a worker has started a source
    assert_stopped(stopped, signum)
    assert partials_under(out) == [] and not (out / "index.json").exists()
    for folder in (out / ".work").glob("*") if (out / ".work").exists() else []:
        assert (folder / "outcome.json").is_file(), folder  # only finished sources wait for the resume

    resumed = emo_rt(*args)
    assert_ok(resumed)
    assert sorted(c.id for c in ShardIndex(out).clips) == ["c00000", "c00001", "c00002", "c00003"]
    assert partials_under(out) == [] and not (out / ".work").exists()
