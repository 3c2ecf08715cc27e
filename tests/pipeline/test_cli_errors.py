"""Bad input: one clear line on stderr, exit code 2, no output file left behind."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from emo_rt.cli import main
from tests.pipeline.conftest import write_speech_like


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in err if not line.startswith("emo-rt: warning")]


@pytest.fixture
def files(tmp_path, portrait):
    audio = write_speech_like(tmp_path / "ok.wav", 0.5)
    return {"image": portrait, "audio": audio, "out": tmp_path / "out" / "video.mp4", "tmp": tmp_path}


def bad_image(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "nope.png"
    path = tmp_path / f"{kind}.png"
    if kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(np.random.default_rng(0).integers(0, 255, 300, np.uint8)))
    elif kind == "text":
        path.write_text("this is not an image")
    elif kind == "tiny":
        Image.new("RGB", (16, 16), (200, 150, 120)).save(path)
    return path


def bad_audio(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "nope.wav"
    path = tmp_path / f"{kind}.wav"
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
    elif kind == "text":
        path.write_text("hello, I am not audio")
    elif kind == "empty":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif kind == "too_short":
        sf.write(path, np.zeros(100, np.float32), 16000)  # 6 ms < one frame at 25 fps
    return path


def render_args(image, audio, out, weights):
    return ["render", str(image), str(audio), "-o", str(out), "--weights", str(weights), "--steps", "1",
            "--cfg", "1", "-q"]


@pytest.mark.parametrize("kind", ["missing", "corrupt", "text", "tiny"])
def test_bad_image(kind, files, model_dir, capsys):
    out = files["out"]
    out.parent.mkdir()
    code, err = run_cli(render_args(bad_image(files["tmp"], kind), files["audio"], out, model_dir), capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("emo-rt: error:"), err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("kind", ["missing", "corrupt", "text", "empty", "too_short"])
def test_bad_audio(kind, files, model_dir, capsys):
    out = files["out"]
    out.parent.mkdir()
    code, err = run_cli(render_args(files["image"], bad_audio(files["tmp"], kind), out, model_dir), capsys)
    assert code == 2 and len(err) == 1 and "audio" in err[0].lower(), err
    assert list(out.parent.iterdir()) == []


def test_unwritable_output(files, model_dir, capsys):
    code, err = run_cli(render_args(files["image"], files["audio"], "/proc/emo-rt-test/out.mp4", model_dir), capsys)
    assert code == 2 and len(err) == 1, err


def test_weights_missing_a_file(files, model_dir, capsys, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "backbone.safetensors").unlink()
    files["out"].parent.mkdir()
    code, err = run_cli(render_args(files["image"], files["audio"], files["out"], broken), capsys)
    assert code == 2 and len(err) == 1 and "backbone.safetensors" in err[0], err
    assert list(files["out"].parent.iterdir()) == []


def test_weights_of_another_config(files, model_dir, capsys, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["unet"]["block_out_channels"] = [32, 64, 256]
    (other / "config.json").write_text(json.dumps(config))
    files["out"].parent.mkdir()
    code, err = run_cli(render_args(files["image"], files["audio"], files["out"], other), capsys)
    assert code == 2 and len(err) == 1 and "does not match config.json" in err[0], err


def test_silent_audio_renders_with_a_warning(files, model_dir, capsys):
    silent = write_speech_like(files["tmp"] / "silent.wav", 0.5, silent=True)
    files["out"].parent.mkdir()
    with pytest.warns(UserWarning, match="silent"):
        code = main(render_args(files["image"], silent, files["out"], model_dir))
    assert code == 0 and files["out"].is_file()


def test_no_default_model_says_how_to_pass_weights(files, capsys, monkeypatch):
    monkeypatch.setattr("emo_rt.pipeline.DEFAULT_MODEL_DIR", files["tmp"] / "no-model")  # an install without it
    files["out"].parent.mkdir()
    code, err = run_cli(["render", str(files["image"]), str(files["audio"]), "-o", str(files["out"])], capsys)
    assert code == 2 and "--weights" in err[0]
