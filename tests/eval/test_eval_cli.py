"""`emo-rt eval` end to end on a tiny random-init model (one short clip, one denoising step), its
one-line errors on bad input, and SIGINT / SIGTERM mid-render through the installed script."""

from __future__ import annotations

import json
import shutil

import pytest

from emo_rt.cli import main
from tests.cli.conftest import ENV, SIGNALS, assert_stopped, files_under, interrupt

QUICK = ["--clips", "1", "--clip-seconds", "1", "--steps", "1", "--drift-seconds", "0.64",
         "--speeds", "0.1,1.0", "--speed-seconds", "0.64", "-q"]


@pytest.mark.slow
def test_eval_writes_the_report(small_corpus, tiny_model_dir, tmp_path, capsys):
    shards, corpus = small_corpus
    out = tmp_path / "report"
    code = main(["eval", "--weights", str(tiny_model_dir), "--data", str(shards), "--corpus", str(corpus),
                 "--out", str(out), *QUICK, "--seeds", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| model |" in printed and "wrote" in printed
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(f"| {name}" in md for name in ("model", "oracle", "floor"))

    rows = report["rows"]
    assert report["data"]["frames"] == [25]
    curve = report["curves"][0]
    assert all(len(curve[k]) == 25 for k in ("true", "model", "oracle", "brow_true", "brow_model", "brow_oracle"))
    # the oracle is the evaluator on the real video; the floor a still reference
    assert rows["oracle"]["lip_r"] >= 0.8
    assert rows["floor"]["lip_r"] == 0.0 and rows["floor"]["offset"] is None
    assert rows["floor"]["flicker"] == 0.0 and rows["floor"]["face_ssim"] == pytest.approx(1.0)
    assert -1 <= rows["model"]["lip_r"] <= 1
    assert report["drift"]["frames"] == 16 and report["drift"]["window"] == 8
    assert report["speed_control"]["speeds"] == [0.1, 1.0] and len(report["speed_control"]["measured"]) == 2
    assert [t["frames"] for t in report["timings"]["renders"]] == [25, 25, 16, 16, 16]  # the clip at 2 seeds
    # --seeds 2: every clip figure at seeds 0 and 1, the model row being seed 0's
    spread = report["seed_spread"]
    assert spread["seeds"] == [0, 1] and "model_seed1" not in rows
    for key in ("lip_r", "flicker", "face_ssim", "fid"):
        assert spread[key]["values"][0] == rows["model"][key], key
        assert spread[key]["mean"] == pytest.approx(sum(spread[key]["values"]) / 2)
    assert spread["face_ssim"]["values"][0] != spread["face_ssim"]["values"][1]  # another seed, other frames
    assert "Over render seeds 0, 1" in md


@pytest.mark.slow  # small_corpus: 4 clips x 3 s at 256 px, preprocessed
@SIGNALS
def test_signal_mid_render_leaves_no_report(signum, small_corpus, tiny_model_dir, tmp_path):
    """Stopped while it renders: exit 130 / 143 with one line, no report folder, no temporary file."""
    shards, corpus = small_corpus
    printed, out, tmp = tmp_path / "stdout.txt", tmp_path / "report", tmp_path / "tmp"
    tmp.mkdir()  # the command's TMPDIR: anything it makes there must go
    args = ("eval", "--weights", tiny_model_dir, "--data", shards, "--corpus", corpus, "--out", out, "--clips", "1",
            "--clip-seconds", "1", "--steps", "1", "--drift-seconds", "120", "--speeds", "1.0", "--threads", "1")
    # the clip's line is printed when its render ends: the 120 s drift render (minutes here) has begun
    stopped = interrupt(args, signum, ready=lambda: printed.exists() and "clip c" in printed.read_text(),
                        env={**ENV, "TMPDIR": str(tmp)}, stdout=printed)
    assert_stopped(stopped, signum)
    assert "drift 120 s:" not in stopped.stdout  # stopped inside the drift render (its line comes at its end)
    assert files_under(tmp_path) == ["stdout.txt", "tmp"]


def run_error(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emo-rt: error: "), err
    return lines[0]


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    line = run_error(["eval", "--weights", str(tmp_path), "--data", str(tmp_path / "nope"), "--corpus", str(tmp_path),
                      "--out", str(tmp_path / "r"), "-q"], capsys)
    assert "--data" in line


def test_folder_without_index_is_one_line(tmp_path, capsys):
    line = run_error(["eval", "--data", str(tmp_path), "--corpus", str(tmp_path), "--out", str(tmp_path / "r"), "-q"],
                     capsys)
    assert "index.json" in line


@pytest.mark.slow
def test_no_test_clips_is_one_line(small_corpus, tmp_path, capsys):
    shards, corpus = small_corpus
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    index = json.loads((copy / "index.json").read_text())
    for clip in index["clips"]:
        clip["split"] = "train"
    (copy / "index.json").write_text(json.dumps(index))
    line = run_error(["eval", "--data", str(copy), "--corpus", str(corpus), "--out", str(tmp_path / "r"), "-q"], capsys)
    assert "no test-split clips" in line
    assert not (tmp_path / "r").exists()


def test_bad_settings_are_one_line(tmp_path, capsys):
    line = run_error(["eval", "--data", str(tmp_path), "--corpus", str(tmp_path), "--out", str(tmp_path / "r"),
                      "--clips", "0"], capsys)
    assert "argument --clips: 0 is out of range: give an integer >= 1" in line
