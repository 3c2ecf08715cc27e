"""int8 engine sets for onnxruntime (export/quantize.py): the VAE decoder quantised, every other
engine the fp32 set's own file, and a render on them that stays within the issue's 40 dB of torch."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from export_helpers import THREADS

from emo_rt.errors import EmoError
from emo_rt.export import build_engines
from emo_rt.export import manifest as mf
from emo_rt.export.quantize import QUANTIZED, calibration_latents
from emo_rt.pipeline import EmoPipeline, default_model_dir
from emo_rt.runtime.backends import load_components
from emo_rt.schedulers import noise_schedule

pytest.importorskip("onnxruntime")


def _entry(out, precision: str, name: str) -> dict:
    return mf.load_manifest(out)["engines"][mf.entry_id("onnxruntime", precision, name)]


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


@pytest.mark.slow
def test_int8_set_quantises_the_decoder_and_copies_the_fp32_engines(ort_engines, tiny_model_dir, tmp_path):
    fp32_dir, _ = ort_engines
    out = tmp_path / "engines"
    shutil.copytree(fp32_dir, out)  # the shared fp32 build stays as it is
    report = build_engines(tiny_model_dir, "onnxruntime", "int8", out, progress=False)
    assert report.built == list(QUANTIZED)  # the others are copies of the fp32 set's files
    assert sorted(report.copied) == sorted(e.name for e in report.engines if e.name not in QUANTIZED)
    assert f"{len(report.copied)} copied from the fp32 set" in report.summary()
    for engine in report.engines:
        int8, fp32 = _entry(out, "int8", engine.name), _entry(out, "fp32", engine.name)
        if engine.name in QUANTIZED:
            assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(out / int8["file"])
            assert "quantize" in int8["identity"]
        else:  # the same bytes as the fp32 engine: copied, not exported again
            assert list(int8["files"].values()) == list(fp32["files"].values()), engine.name
            assert "copy" in int8["seconds"]
    again = build_engines(tiny_model_dir, "onnxruntime", "int8", out, progress=False)
    assert again.built == again.copied == []


def test_int8_is_refused_where_nothing_runs_it(tiny_model_dir, tmp_path):
    with pytest.raises(EmoError, match="int8 builds onnxruntime engines"):
        build_engines(tiny_model_dir, "tensorrt", "int8", tmp_path / "engines", progress=False)
    with pytest.raises(EmoError, match="int8 runs onnxruntime's int8 engines"):
        load_components("torch", tiny_model_dir, dtype="int8")


def test_calibration_portraits_are_latents_of_the_model(tiny_model_dir):
    from emo_rt.models import EmoModel

    model = EmoModel.from_pretrained(tiny_model_dir)
    latents = calibration_latents(model, count=8)
    c = model.config
    assert latents.shape == (8, c.vae.latent_channels, c.latent_size, c.latent_size)
    assert torch.isfinite(latents).all() and latents.std() > 0.1
    assert not torch.equal(latents[0], latents[4])  # four frames per identity: two identities


@pytest.mark.slow
def test_int8_render_of_the_shipped_model_stays_within_40_db_of_torch(tmp_path):
    """The shipped model, two windows at its own render settings: int8 engines vs torch fp32. The
    decoder is the only int8 engine, and its round trip of held-out corpus frames reads 46-47 dB
    against torch's; the issue's bar for a faster path is 40 dB."""
    from test_render import drawn_portrait, psnr, render_frames

    from emo_rt.io.image import FaceBox, prepare_reference

    model_dir = default_model_dir()
    out = tmp_path / "engines"
    build_engines(model_dir, "onnxruntime", "int8", out, progress=False)
    torch_pipe = EmoPipeline.from_pretrained(model_dir)
    int8_pipe = EmoPipeline(load_components("onnxruntime", model_dir, out, "int8", threads=THREADS),
                            noise_schedule(model_dir), defaults=torch_pipe.defaults)
    assert int8_pipe.components.name.startswith("onnxruntime")
    reference = prepare_reference(drawn_portrait(), torch_pipe.config.resolution, face_box=FaceBox(35, 22, 90, 116))
    f, rate = torch_pipe.config.num_frames, torch_pipe.config.audio.sample_rate
    seconds = 2 * f / torch_pipe.config.fps
    waveform = (0.3 * np.sin(2 * np.pi * 180 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    expected = render_frames(torch_pipe, reference, waveform, torch_pipe.defaults)
    got = render_frames(int8_pipe, reference, waveform, torch_pipe.defaults)
    assert got.shape == expected.shape == (2 * f, torch_pipe.config.resolution, torch_pipe.config.resolution, 3)
    worst = min(psnr(a, b) for a, b in zip(got, expected))
    assert 40 <= worst < 80, worst  # < 80: the decoder really ran in int8 (fp32 engines read 95+ dB)
