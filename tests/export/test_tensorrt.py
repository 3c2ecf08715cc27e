"""TensorRT: what runs without it (spec -> optimisation profile, engine naming and staleness by
TensorRT version / device / builder options, the error without it), and the real build + run,
which skips here with the reason."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from export_helpers import ALL_ENGINES as ALL
from export_helpers import PARITY_CASES, check_engine_outputs, perturb_weights

from emo_rt.config import tiny
from emo_rt.export import build as build_module
from emo_rt.export import build_engines, tensorrt_build
from emo_rt.export.specs import export_specs
from emo_rt.runtime.backends import StaleEngineError
from emo_rt.runtime.backends import manifest as read_side

H100 = "NVIDIA H100 80GB HBM3 (sm_90)"


class RecordingProfile:
    """Duck-types tensorrt.IOptimizationProfile.set_shape."""

    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


def test_profiles_come_from_the_spec_dims():
    config = tiny()
    specs = export_specs(config)
    profile = RecordingProfile()
    assert tensorrt_build.apply_profile(profile, specs["step"]) == len(specs["step"].inputs)
    c = config.vae.latent_channels
    assert profile.shapes["noisy_latents"] == ((1, c, 8, 16, 16), (2, c, 8, 16, 16), (2, c, 8, 16, 16))
    assert profile.shapes["timestep"] == ((1,), (2,), (2,))
    assert profile.shapes["motion_feature_0"][0][:2] == (1, 4)  # batch 1, n = 4 motion frames

    audio = RecordingProfile()
    tensorrt_build.apply_profile(audio, specs["audio_encoder"])
    # one video frame (640 samples at 25 fps) .. 32 s (a 30 s chunk + 1 s context each side)
    assert audio.shapes["waveform"] == ((1, 640), (1, 160_000), (1, 512_000))
    assert audio.shapes["frame_grid"] == ((1,), (250,), (800,))

    fixed = RecordingProfile()
    for name in ("reference", "motion", "face_locator"):  # static shapes: no profile, CUDA-graph-able
        assert tensorrt_build.apply_profile(fixed, specs[name]) == 0 and specs[name].fixed_shape
    assert fixed.shapes == {}
    decoder = RecordingProfile()
    tensorrt_build.apply_profile(decoder, specs["vae_decoder"])
    assert decoder.shapes["latents"] == ((1, c, 16, 16), (8, c, 16, 16), (8, c, 16, 16))


def test_timing_cache_is_per_version_and_device(tmp_path):
    a = tensorrt_build.timing_cache_path(tmp_path, "10.8.0", H100)
    assert a.name == "timing-cache.trt10.8.0.nvidia-h100-80gb-hbm3-sm-90.bin"
    assert a != tensorrt_build.timing_cache_path(tmp_path, "10.9.0", H100)
    assert a != tensorrt_build.timing_cache_path(tmp_path, "10.8.0", "NVIDIA L4 (sm_89)")


class StubBuilderConfig:
    """Duck-types IBuilderConfig's timing-cache calls: a cache is its blob, and set_timing_cache
    accepts the empty cache and `accepted` (returning False otherwise, as TensorRT does for a cache
    from another version or device)."""

    def __init__(self, accepted: bytes | None = b"timings of this GPU"):
        self.accepted, self.attached = accepted, None

    def create_timing_cache(self, blob: bytes) -> bytes:
        return bytes(blob)

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        if self.accepted is None or cache not in (b"", self.accepted):
            return False
        self.attached = cache
        return True


def test_a_timing_cache_tensorrt_refuses_is_replaced_by_an_empty_one(tmp_path):
    from emo_rt.errors import EmoError

    path = tmp_path / "timing-cache.bin"
    config = StubBuilderConfig()
    assert tensorrt_build.attach_timing_cache(config, path) is False and config.attached == b""  # none yet
    path.write_bytes(b"timings of this GPU")
    assert tensorrt_build.attach_timing_cache(config, path) is True and config.attached == path.read_bytes()
    path.write_bytes(b"timings of another GPU")
    config = StubBuilderConfig()
    with pytest.warns(RuntimeWarning, match="refused the timing cache timing-cache.bin"):
        assert tensorrt_build.attach_timing_cache(config, path) is False
    assert config.attached == b""  # the build goes on with a fresh cache, and rewrites the file
    with pytest.warns(RuntimeWarning), pytest.raises(EmoError, match="could not attach an empty timing cache"):
        tensorrt_build.attach_timing_cache(StubBuilderConfig(accepted=None), path)


@pytest.fixture
def fake_tensorrt(monkeypatch, tmp_path):
    """Pretend this machine has TensorRT `target["version"]` on `target["device"]`."""
    target = {"version": "10.8.0", "device": H100}
    built = []

    def fake_build(onnx_path, plan_path, spec, timing_cache):
        assert onnx_path.is_file() and timing_cache.parent == plan_path.parent
        plan_path.write_text(f"plan {spec.name} {target}")
        built.append(spec.name)
        return {"build": 0.0}

    monkeypatch.setattr(build_module, "backend_target", lambda backend: (target["version"], target["device"], False))
    monkeypatch.setattr(tensorrt_build, "build_engine", fake_build)
    return target, built


def test_tensorrt_engines_are_keyed_by_version_device_and_builder(model_dir, tmp_path, stub_export, fake_tensorrt):
    target, plans = fake_tensorrt
    out = tmp_path / "engines"
    first = build_engines(model_dir, "tensorrt", "fp16", out, progress=False)
    assert sorted(first.built) == ALL
    entries = json.loads((out / "manifest.json").read_text())["engines"]
    step = entries["tensorrt/fp16/step"]
    assert step["file"] == f"step.fp16.{step['key'][:16]}.plan"
    assert step["identity"]["builder"]["strongly_typed"] is True
    assert not step["portable"] and step["device"] == H100
    assert build_engines(model_dir, "tensorrt", "fp16", out, progress=False).built == []

    target["version"] = "10.9.0"  # a TensorRT upgrade: every plan is rebuilt, from the same ONNX files
    exports_before = len(stub_export)
    upgraded = build_engines(model_dir, "tensorrt", "fp16", out, progress=False)
    assert sorted(upgraded.built) == ALL
    assert all(e.reason == "backend_version changed" for e in upgraded.engines)
    assert len(stub_export) == exports_before, "the ONNX intermediates were reused"

    perturb_weights(model_dir, "audio_projector")
    assert build_engines(model_dir, "tensorrt", "fp16", out, progress=False).built == ["audio_projector"]

    # the runtime refuses plans from another TensorRT version or GPU
    read_side.read_engines(out, model_dir, "tensorrt", "fp16", "10.9.0", H100)
    with pytest.raises(StaleEngineError, match="built with tensorrt 10.9.0, this is 10.10.0"):
        read_side.read_engines(out, model_dir, "tensorrt", "fp16", "10.10.0", H100)
    with pytest.raises(StaleEngineError, match="built for NVIDIA H100"):
        read_side.read_engines(out, model_dir, "tensorrt", "fp16", "10.9.0", "NVIDIA L4 (sm_89)")


def tensorrt_usable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


without_tensorrt = pytest.mark.skipif(tensorrt_usable(), reason="this machine has TensorRT and CUDA: "
                                      "the build and run tests below cover it")


@without_tensorrt
def test_tensorrt_build_without_tensorrt_says_why(model_dir, tmp_path):
    with pytest.raises(tensorrt_build.TensorRTUnavailable, match="--backend tensorrt needs"):
        build_engines(model_dir, "tensorrt", "fp16", tmp_path / "engines", progress=False)


def test_builder_and_runtime_name_the_device_alike(monkeypatch):
    from emo_rt.runtime.backends.tensorrt import cuda_device_name as runtime_device_name

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (9, 0))
    assert tensorrt_build.cuda_device_name() == runtime_device_name() == H100


@without_tensorrt
def test_tensorrt_runtime_without_tensorrt_says_why(model_dir, tmp_path):
    from emo_rt.errors import EmoError
    from emo_rt.runtime.backends import load_components

    with pytest.raises(EmoError, match="--backend tensorrt needs"):
        load_components("tensorrt", model_dir, tmp_path, torch.float16)


def test_tensorrt_engines_match_torch(tiny_model_dir, tiny_model_fp32, tiny_model_fp64, tmp_path):
    """The onnxruntime parity cases on fp32 TensorRT engines (TF32 off), each shape twice: the
    second call of the step network replays its CUDA graph; then the step alternates batch 1 and 2."""
    pytest.importorskip("tensorrt", reason="the tensorrt package is not installed (it comes with the "
                                           "emo-rt[gpu] extra and needs an NVIDIA GPU + driver to build or run)")
    if not torch.cuda.is_available():
        pytest.skip("tensorrt is installed but torch sees no CUDA device: TensorRT builds and runs on a GPU only")
    from emo_rt.runtime.backends import load_components

    report = build_engines(tiny_model_dir, "tensorrt", "fp32", tmp_path, progress=False)
    assert sorted(report.built) == ALL
    components = load_components("tensorrt", tiny_model_dir, tmp_path, torch.float32)
    specs = export_specs(tiny_model_fp32.config)
    for name, sizes in PARITY_CASES:
        spec = specs[name]
        inputs = [x.cuda() for x in spec.sample_inputs(generator=torch.Generator().manual_seed(1), **sizes)]
        for _ in range(2):
            outputs = components.run(name, **dict(zip(spec.input_names, inputs)))
            check_engine_outputs(spec, outputs, inputs, tiny_model_fp32, tiny_model_fp64, sizes)
    # the step engine switching guidance batch between replays: each shape has a graph (and an
    # execution context) of its own, so a replay after a switch still computes its own batch
    spec = specs["step"]
    for batch in (1, 2, 1, 2):
        sizes = {"batch": batch}
        inputs = [x.cuda() for x in spec.sample_inputs(generator=torch.Generator().manual_seed(10 + batch), **sizes)]
        outputs = components.run("step", **dict(zip(spec.input_names, inputs)))
        check_engine_outputs(spec, outputs, inputs, tiny_model_fp32, tiny_model_fp64, sizes)
