"""Export test fixtures: tiny random-init model directories, the real onnxruntime build shared by
the parity and render tests, and a stub exporter for the manifest tests, which count rebuilds.

The real build is the slow part (the dynamo export of the tiny step network alone takes ~2.5 min
of CPU). It goes to pytest's cache directory: the model is the same bytes every run (fixed seed),
so build_engines reuses what its manifest says is current and re-exports whatever the code,
weights, specs or library versions changed. A clean checkout (or -p no:cacheprovider, or
EMO_RT_FRESH_ENGINES=1) builds everything.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from export_helpers import THREADS

from emo_rt.config import tiny


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from emo_rt.models import EmoModel

    torch.manual_seed(1234)
    return EmoModel(tiny()).save_pretrained(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def ort_engines(tiny_model_dir, tmp_path_factory, request):
    """(engine_dir, BuildReport): every tiny engine, fp32, for onnxruntime."""
    from emo_rt.export import build_engines

    cache = getattr(request.config, "cache", None)
    if cache is None or os.environ.get("EMO_RT_FRESH_ENGINES") == "1":
        out = tmp_path_factory.mktemp("engines")
    else:
        out = cache.mkdir("emo-rt-tiny-engines")
    report = build_engines(tiny_model_dir, "onnxruntime", "fp32", out, progress=False)
    return out, report


@pytest.fixture(scope="session")
def tiny_model_fp32(tiny_model_dir):
    from emo_rt.models import EmoModel

    return EmoModel.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_model_fp64(tiny_model_dir):
    """The same weights in float64: the reference the parity tests measure errors against."""
    from emo_rt.models import EmoModel

    return EmoModel.from_pretrained(tiny_model_dir, dtype=torch.float64)


@pytest.fixture
def model_dir(tmp_path, tiny_model_dir):
    """A tiny model directory of the test's own (the manifest tests change its weights)."""
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


@pytest.fixture
def stub_export(monkeypatch):
    """Replace the ONNX export inside build_engines by a file write; returns the exported names."""
    from emo_rt.export import build as build_module
    from emo_rt.export.onnx_export import OnnxExport

    calls = []

    def fake_export(spec, model, path, precision="fp32", fold=True, quiet=True):
        assert next(model.parameters()).dtype == {"fp32": torch.float32, "fp16": torch.float16}[precision]
        path.write_text(f"stub {spec.name} {precision} {path.name}")
        calls.append(spec.name)
        return OnnxExport(path, [path], 0, False, {"export": 0.0})

    monkeypatch.setattr(build_module, "export_onnx", fake_export)
    return calls
