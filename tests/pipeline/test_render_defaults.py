"""`emo-rt render` with no settings flags uses the model directory's render.json, and the video
carries the input's audio as it came (rate and channels)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import soundfile as sf

from emo_rt.cli import main
from emo_rt.io.video import read_video
from emo_rt.pipeline import RENDER_FILE, EmoPipeline, RenderSettings, model_render_settings, write_model_render_settings
from tests.pipeline.conftest import write_speech_like


def test_render_uses_the_models_recorded_settings_and_flags_override_them(model_dir, portrait, tmp_path, capsys):
    model = shutil.copytree(model_dir, tmp_path / "model")
    assert model_render_settings(model) == RenderSettings()  # no render.json: the library's defaults
    write_model_render_settings(model, RenderSettings(scheduler="euler", steps=2, cfg=1.0, start="noise"))
    assert EmoPipeline.from_pretrained(model).defaults.steps == 2
    audio = write_speech_like(tmp_path / "a.wav", 0.32, rate=16000)
    common = ["render", str(portrait), str(audio), "--weights", str(model), "--reference-cache", "off"]
    assert main([*common, "-o", str(tmp_path / "a.mp4")]) == 0
    assert "settings: euler 2 steps, cfg 1, start noise" in capsys.readouterr().out
    assert main([*common, "-o", str(tmp_path / "b.mp4"), "--steps", "1", "--cfg", "2"]) == 0
    assert "settings: euler 1 steps, cfg 2, start noise" in capsys.readouterr().out


def test_a_render_json_with_a_missing_key_is_one_line(model_dir, portrait, tmp_path, capsys):
    model = shutil.copytree(model_dir, tmp_path / "model")
    (model / RENDER_FILE).write_text(json.dumps({"scheduler": "ddim", "steps": 8, "cfg": 3.5}))
    audio = write_speech_like(tmp_path / "a.wav", 0.32, rate=16000)
    code = main(["render", str(portrait), str(audio), "--weights", str(model), "-o", str(tmp_path / "a.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"emo-rt: error: {model / RENDER_FILE}: missing key 'start'"]
    assert not (tmp_path / "a.mp4").exists()


def test_the_video_carries_44k_stereo_as_it_came(model_dir, portrait, tmp_path):
    rate = 44100
    t = np.arange(int(0.4 * rate)) / rate
    left, right = 0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)  # different channels
    audio = tmp_path / "stereo.wav"
    sf.write(audio, np.stack([left, right], 1).astype(np.float32), rate)
    out = tmp_path / "out.mp4"
    assert main(["render", str(portrait), str(audio), "--weights", str(model_dir), "--steps", "1", "--cfg", "1",
                 "-o", str(out), "-q", "--reference-cache", "off"]) == 0
    _, info = read_video(out)
    assert info.audio_sample_rate == rate and info.audio_channels == 2
    assert abs(info.audio_duration - 0.4) < 0.03
