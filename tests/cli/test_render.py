"""`emo-rt render` through the installed script: a render, bad arguments (one line, exit 2,
nothing written, before any model loads), bad input, and Ctrl-C / SIGTERM in the middle of a
render (the temporary `.part` video is removed, exit 130 / 143)."""

from __future__ import annotations

import importlib.util
import os

import av
import numpy as np
import pytest
import soundfile as sf

from tests.cli.conftest import (
    SIGNALS,
    appeared,
    assert_error,
    assert_ok,
    assert_stopped,
    emo_rt,
    files_under,
    interrupt,
)

FAST = ("--steps", "1", "--cfg", "1", "--threads", "1")


def render_args(portrait, audio, out, model_dir, *more):
    return ["render", portrait, audio, "-o", out, "--weights", model_dir, *FAST, *more]


def test_render_writes_the_video_and_preview(portrait, speech, model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = emo_rt(*render_args(portrait, speech, out / "video.mp4", model_dir, "--preview", out / "sheet.png",
                                 "--seed", "3", "-q"))
    assert_ok(result)
    assert files_under(out) == ["sheet.png", "video.mp4"]  # and no temporary file beside them
    assert f"wrote {out / 'video.mp4'}" in result.stdout
    dali = importlib.util.find_spec("nvidia.dali") is not None and os.environ.get("EMO_RT_NO_DALI", "") in ("", "0")
    assert f"(torch; inputs: {'dali' if dali else 'fallback'})" in result.stdout  # what read the files
    with av.open(str(out / "video.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (128, 128, 3)  # 0.4 s at 25 fps, the tiny preset's side


# The cases first: each was a traceback, an exit 0 with a black video, or accepted.
BAD_ARGUMENTS = [
    (("--steps", "0"), "argument --steps: 0 is out of range: give an integer >= 1 and <= 1000"),
    (("--steps", "-3"), "argument --steps: -3 is out of range"),
    (("--cfg", "nan"), "argument --cfg: nan is out of range: give a finite number >= 0 and <= 30"),
    (("--speed", "-5"), "argument --speed: -5 is out of range: give a finite number >= 0 and <= 10"),
    (("--steps", "2.5"), "argument --steps: expected an integer"),
    (("--steps", "1001"), "<= 1000"),
    (("--cfg", "inf"), "argument --cfg: inf is out of range"),
    (("--cfg", "-1"), "argument --cfg"),
    (("--speed", "nan"), "argument --speed"),
    (("--speed", "11"), "argument --speed"),
    (("--seed", "-1"), "argument --seed: -1 is out of range: give an integer >= 0 and <= 9223372036854775807"),
    (("--threads", "0"), "argument --threads"),
    (("--fps", "0"), "argument --fps"),
    (("--resolution", "4"), "argument --resolution"),
    (("--scheduler", "plms"), "argument --scheduler: invalid choice: 'plms'"),
    (("--start", "middle"), "argument --start"),
    (("--dtype", "int4"), "argument --dtype"),
    (("--backend", "tflite"), "argument --backend"),
    (("--attention", "flash"), "argument --attention"),
    (("--device", "gpu7"), "argument --device: 'gpu7' is not a device"),
    (("--face-box", "1,2,3"), "argument --face-box"),
    (("--face-box", "0,0,-5,10"), "argument --face-box"),
    (("--overlap", "--no-overlap"), "not allowed with argument"),
    (("--bogus",), "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("more, message", BAD_ARGUMENTS, ids=[" ".join(m) for m, _ in BAD_ARGUMENTS])
def test_bad_argument(more, message, portrait, speech, tmp_path):
    # no --weights: the error must come before any model is looked for, let alone loaded
    result = emo_rt("render", portrait, speech, "-o", tmp_path / "video.mp4", *more, cwd=tmp_path)
    assert_error(result, message, only_line=True)
    assert files_under(tmp_path) == []


def test_int8_without_its_engines_is_one_clear_line(portrait, speech, model_dir, tmp_path):
    """int8 is onnxruntime's int8 engine set: asked of torch, it is refused before anything renders."""
    result = emo_rt(*render_args(portrait, speech, tmp_path / "video.mp4", model_dir, "--dtype", "int8"))
    assert_error(result, "int8 runs onnxruntime's int8 engines (--backend onnxruntime)", only_line=True)
    assert files_under(tmp_path) == []


def test_speed_curve_values_are_checked(portrait, speech, tmp_path):
    curve = tmp_path / "speeds.txt"
    curve.write_text("0.5, 1.0\n-5\n")
    result = emo_rt("render", portrait, speech, "-o", tmp_path / "video.mp4", "--speed", curve)
    assert_error(result, "argument --speed: speed curve", "-5 is out of range", only_line=True)
    missing = emo_rt("render", portrait, speech, "-o", tmp_path / "video.mp4", "--speed", tmp_path / "none.txt")
    assert_error(missing, "argument --speed", "neither a speed", only_line=True)
    assert files_under(tmp_path) == ["speeds.txt"]


def test_missing_inputs_and_unwritable_outputs_before_the_model_loads(portrait, speech, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cases = [((tmp_path / "none.png", speech, "-o", out / "v.mp4"), "image file not found"),
             ((portrait, tmp_path / "none.wav", "-o", out / "v.mp4"), "audio file not found"),
             ((portrait, speech, "-o", tmp_path / "no" / "v.mp4"), "output video directory does not exist"),
             ((portrait, speech, "-o", out / "v.mp4", "--preview", tmp_path / "no" / "s.png"),
              "preview directory does not exist")]
    for args, message in cases:
        assert_error(emo_rt("render", *args, "--weights", tmp_path / "not-a-model"), message, only_line=True)
    assert files_under(out) == []


@pytest.mark.parametrize("kind", ["corrupt_audio", "short_audio", "weights"])
def test_bad_input(kind, portrait, speech, model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    audio, weights, message = speech, model_dir, ""
    if kind == "corrupt_audio":
        audio = tmp_path / "noise.wav"
        audio.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
        message = "audio"
    elif kind == "short_audio":
        audio = tmp_path / "short.wav"
        sf.write(audio, np.zeros(100, np.float32), 16000)  # 6 ms: less than one frame
        message = "audio"
    else:
        weights = tmp_path / "half-model"
        weights.mkdir()
        (weights / "config.json").write_text((model_dir / "config.json").read_text())
        message = "missing weights"
    assert_error(emo_rt(*render_args(portrait, audio, out / "video.mp4", weights, "-q")), message)
    assert files_under(out) == []


@SIGNALS
def test_signal_mid_render_leaves_nothing(signum, portrait, long_speech, model_dir, tmp_path):
    """The video's temporary file exists from the first window to the rename at the end: a signal
    while it is there is a signal mid-render. --threads 1 on a 2-core machine overlaps denoising
    (a worker thread) with decoding and encoding, so the worker is stopped too."""
    out = tmp_path / "out"
    out.mkdir()
    args = render_args(portrait, long_speech, out / "video.mp4", model_dir, "--face-box", "20,20,88,88", "-q")
    result = interrupt(args, signum, ready=appeared(out, ".video.*.part.mp4"))
    assert_stopped(result, signum)
    assert files_under(out) == []
