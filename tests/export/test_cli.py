"""`emo-rt build-engines` and `emo-rt render --backend`: the commands on real onnxruntime engines
(reused from the shared build), the provider they report, and one-line refusals (exit code 2)."""

from __future__ import annotations

import pytest
from export_helpers import ALL_ENGINES, perturb_weights

from emo_rt.cli import main
from tests.pipeline.conftest import draw_face, write_speech_like


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(draw_face(128)).save(folder / "ref.png")
    return folder / "ref.png", write_speech_like(folder / "speech.wav", 0.3, rate=16000)  # 8 frames: one window


def render_args(inputs, out, weights, *extra):
    image, audio = inputs
    return ["render", str(image), str(audio), "-o", str(out), "--weights", str(weights), "--steps", "1",
            "--cfg", "1", "--no-crop", "-q", *extra]


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if not line.startswith("emo-rt: warning")]


def test_build_engines_reuses_current_engines_then_render_runs_on_them(tiny_model_dir, ort_engines, inputs,
                                                                       tmp_path, capsys):
    engine_dir = ort_engines[0]
    assert main(["build-engines", "--weights", str(tiny_model_dir), "--out", str(engine_dir), "-q"]) == 0
    assert f"0 built, {len(ALL_ENGINES)} reused" in capsys.readouterr().out

    out = tmp_path / "video.mp4"
    code = main(render_args(inputs, out, tiny_model_dir, "--backend", "onnxruntime", "--engines", str(engine_dir)))
    assert code == 0, error_lines(capsys)
    printed = capsys.readouterr().out
    assert "8 frames" in printed and "(onnxruntime[CPUExecutionProvider]; inputs: " in printed  # backend, then input path
    assert out.stat().st_size > 0


def test_render_on_openvino_runs_the_onnx_set_and_names_its_precision(tiny_model_dir, ort_engines, inputs,
                                                                        tmp_path, capsys):
    pytest.importorskip("openvino")
    from openvino import Core

    from emo_rt.runtime.backends.openvino import native_bf16

    out = tmp_path / "video.mp4"
    code = main(render_args(inputs, out, tiny_model_dir, "--backend", "openvino", "--engines", str(ort_engines[0]),
                            "--threads", "1"))
    assert code == 0, error_lines(capsys)
    precision = "bf16" if native_bf16(Core()) else "fp32"  # no --dtype: bf16 where the CPU has it natively
    printed = capsys.readouterr().out
    assert "8 frames" in printed and f"(openvino[CPU,{precision},1 thread]; inputs: " in printed
    assert out.stat().st_size > 0


def test_render_refuses_stale_engines_in_one_line(model_dir, ort_engines, inputs, tmp_path, capsys):
    engine_dir = ort_engines[0]
    perturb_weights(model_dir, "backbone")
    out = tmp_path / "video.mp4"
    code = main(render_args(inputs, out, model_dir, "--backend", "onnxruntime", "--engines", str(engine_dir)))
    assert code == 2
    (line,) = error_lines(capsys)
    assert line.startswith(f"emo-rt: error: the step engine in {engine_dir} is stale (built from other weights than "
                           f"{model_dir / 'backbone.safetensors'}): run `emo-rt build-engines --weights {model_dir} "
                           f"--backend onnxruntime --precision fp32 --out {engine_dir}`")
    assert not out.exists()


@pytest.mark.parametrize("extra,message", [
    (["--backend", "onnxruntime"], "--backend onnxruntime needs --engines DIR"),
    (["--engines", "somewhere"], "--engines is for --backend onnxruntime, openvino or tensorrt"),
    (["--backend", "openvino"], "--backend openvino needs --engines DIR (the ONNX set of `emo-rt build-engines"),
    (["--backend", "openvino", "--engines", "nowhere", "--dtype", "float16"], "openvino runs float32 or bfloat16"),
    (["--backend", "onnxruntime", "--engines", "nowhere"], "no engines in nowhere (no manifest.json)"),
    (["--backend", "onnxruntime", "--engines", "nowhere", "--dtype", "bfloat16"], "runs fp32, fp16 or (onnxruntime) int8 engines"),
])
def test_render_backend_argument_errors(tiny_model_dir, inputs, tmp_path, capsys, extra, message):
    assert main(render_args(inputs, tmp_path / "v.mp4", tiny_model_dir, *extra)) == 2
    (line,) = error_lines(capsys)
    assert message in line


def test_build_engines_shows_one_progress_line_per_engine(model_dir, tmp_path, stub_export, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at 80 columns when output is not a terminal
    out = tmp_path / "engines"
    assert main(["build-engines", "--weights", str(model_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"building {len(ALL_ENGINES)} onnxruntime fp32 engine(s) into {out}" in printed
    assert f"{len(ALL_ENGINES)} built, 0 reused" in printed
    for name in ALL_ENGINES:
        assert sum(name in line and "built in" in line for line in printed.splitlines()) == 1, name
