"""OpenVINO on the onnxruntime fp32 ONNX set (emo_rt/runtime/backends/openvino.py): the same render
as torch within the issue's 40 dB, the same frames overlapped as sequential (the decoder and the step
network are called from two threads), bf16 where the CPU has it, and one clear line for what it
does not run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import THREADS
from test_render import drawn_portrait, psnr, render_frames

from emo_rt.errors import EmoError
from emo_rt.io.image import FaceBox, prepare_reference
from emo_rt.models import EmoModel
from emo_rt.pipeline import EmoPipeline, RenderSettings
from emo_rt.runtime.backends import load_components
from emo_rt.runtime.components import TorchComponents
from emo_rt.schedulers import noise_schedule

openvino = pytest.importorskip("openvino")


def _inputs(config):
    reference = prepare_reference(drawn_portrait(), config.resolution, face_box=FaceBox(35, 22, 90, 115))
    t = np.arange(int(0.5 * config.audio.sample_rate)) / config.audio.sample_rate  # 0.5 s: 13 frames, 2 windows
    waveform = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return reference, waveform


@pytest.fixture(scope="module")
def torch_frames(tiny_model_dir):
    model = EmoModel.from_pretrained(tiny_model_dir)
    reference, waveform = _inputs(model.config)
    pipeline = EmoPipeline(TorchComponents(model), noise_schedule(None))
    return render_frames(pipeline, reference, waveform, RenderSettings(steps=3, cfg=2.5, seed=7))


def test_openvino_render_matches_torch_and_overlap_changes_nothing(tiny_model_dir, ort_engines, torch_frames):
    components = load_components("openvino", tiny_model_dir, ort_engines[0], threads=THREADS)
    assert components.name == f"openvino[CPU,fp32,{THREADS} thread{'s' * (THREADS > 1)}]"
    # the step is compiled for each batch it was built for (1, 2: the render's two forms), and only so
    built = components.records["step"].dims["batch"]
    assert sorted(key[0][0] for key in components.compiled_shapes("step")) == [*range(built["min"], built["max"] + 1)]
    assert components.compiled_shapes("vae_decoder") == [None]
    pipeline = EmoPipeline(components, noise_schedule(None))
    reference, waveform = _inputs(components.config)
    got = render_frames(pipeline, reference, waveform, RenderSettings(steps=3, cfg=2.5, seed=7, overlap=False))

    assert got.shape == torch_frames.shape == (13, components.config.resolution, components.config.resolution, 3)
    assert torch_frames.std() > 5, "the torch render is flat: the comparison would say nothing"
    per_frame = [psnr(g, e) for g, e in zip(got, torch_frames)]
    assert min(per_frame) >= 40, f"per-frame PSNR (dB): {[round(p, 1) for p in per_frame]}"
    overlapped = render_frames(pipeline, reference, waveform, RenderSettings(steps=3, cfg=2.5, seed=7, overlap=True))
    assert np.array_equal(overlapped, got)


def test_openvino_bf16_stays_as_near_torch_as_torch_bf16(tiny_model_dir, ort_engines, torch_frames):
    """The control is torch's own bf16 render of the same model: OpenVINO's bf16 kernels round in
    other places, so they may differ from it, but a cast in the wrong place (weights, the timestep,
    the latents between steps) would cost far more than the 6 dB allowed here."""
    from emo_rt.runtime.backends.openvino import native_bf16

    if not native_bf16(openvino.Core()):
        pytest.skip("this CPU has no native bf16 (AVX-512 BF16 or AMX): openvino refuses bf16 here")
    components = load_components("openvino", tiny_model_dir, ort_engines[0], "bf16", threads=THREADS)
    assert "bf16" in components.name
    reference, waveform = _inputs(components.config)
    settings = RenderSettings(steps=3, cfg=2.5, seed=7)
    got = render_frames(EmoPipeline(components, noise_schedule(None)), reference, waveform, settings)
    bf16_model = EmoModel.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    control = render_frames(EmoPipeline(TorchComponents(bf16_model, torch.bfloat16), noise_schedule(None)),
                            reference, waveform, settings)
    assert not np.array_equal(got, torch_frames), "bf16 gave fp32's frames: the precision hint did nothing"
    assert psnr(got, torch_frames) >= psnr(control, torch_frames) - 6, (psnr(got, torch_frames),
                                                                        psnr(control, torch_frames))


def test_openvino_without_a_dtype_runs_bf16_exactly_where_the_cpu_has_it(tiny_model_dir, ort_engines):
    from emo_rt.runtime.backends.openvino import native_bf16

    components = load_components("openvino", tiny_model_dir, ort_engines[0], None, threads=THREADS)
    assert ("bf16" if native_bf16(openvino.Core()) else "fp32") in components.name
    assert (ort_engines[0] / "openvino-cache").is_dir()  # compiled networks kept for the next load


def test_openvino_refuses_what_it_does_not_run(tiny_model_dir, tmp_path):
    with pytest.raises(EmoError, match="needs --engines DIR"):
        load_components("openvino", tiny_model_dir)
    with pytest.raises(EmoError, match="float32 or bfloat16, not fp16"):
        load_components("openvino", tiny_model_dir, tmp_path, "fp16")
    with pytest.raises(EmoError, match="int8 runs onnxruntime's int8 engines"):
        load_components("openvino", tiny_model_dir, tmp_path, "int8")
    with pytest.raises(EmoError, match="build-engines .* --backend onnxruntime"):
        load_components("openvino", tiny_model_dir, tmp_path)  # no manifest: the ONNX set to build


def test_streamed_audio_on_openvino_gives_the_offline_frames(tiny_model_dir, ort_engines):
    """`emo-rt serve` streams the audio in pieces (EmoPipeline.stream): the audio encoder then runs
    on chunks, a shape the offline render never gives it."""
    components = load_components("openvino", tiny_model_dir, ort_engines[0], "fp32", threads=THREADS)
    pipeline = EmoPipeline(components, noise_schedule(None))
    reference, waveform = _inputs(components.config)
    settings = RenderSettings(steps=2, cfg=1.0, seed=3, audio_chunk_seconds=0.2)
    offline = render_frames(pipeline, reference, waveform, settings)
    pieces = [waveform[i: i + 1500] for i in range(0, len(waveform), 1500)]
    streamed = np.concatenate(list(pipeline.stream(reference, pieces, settings)))
    assert np.array_equal(streamed, offline)


def test_serve_takes_the_engine_backends_and_refuses_a_half_choice(tiny_model_dir, capsys):
    from emo_rt.cli import main
    from tests.serve.server import free_port

    assert main(["serve", "--engines", "somewhere", "--port", str(free_port())]) == 2
    assert "--engines is for --backend onnxruntime or openvino" in capsys.readouterr().err
    assert main(["serve", "--backend", "openvino", "--weights", str(tiny_model_dir),
                 "--port", str(free_port())]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("emo-rt: error: --backend openvino needs --engines DIR")
