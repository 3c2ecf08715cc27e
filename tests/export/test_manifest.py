"""Manifest logic: build_engines rebuilds exactly the engines whose identity changed, and the
runtime refuses stale or foreign engines with one line that says what to run.

The ONNX export is replaced by a stub that writes a small file (the real export is covered by the
parity tests): these tests count rebuilds, they do not need real engines.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
from export_helpers import ALL_ENGINES as ALL
from export_helpers import perturb_weights

from emo_rt.config import tiny
from emo_rt.export import build as build_module
from emo_rt.export import build_engines
from emo_rt.export import manifest as write_side
from emo_rt.export.specs import export_specs
from emo_rt.runtime.backends import StaleEngineError, load_components
from emo_rt.runtime.backends import manifest as read_side


def build(model_dir, out, precision="fp32"):
    return build_engines(model_dir, "onnxruntime", precision, out, progress=False)


def test_rebuilds_exactly_the_affected_engines(model_dir, tmp_path, stub_export):
    out = tmp_path / "engines"
    first = build(model_dir, out)
    assert sorted(first.built) == ALL and first.reused == []
    assert all(e.reason == "not built yet" for e in first.engines)

    again = build(model_dir, out)
    assert again.built == [] and sorted(again.reused) == ALL

    perturb_weights(model_dir, "backbone")
    report = build(model_dir, out)
    assert report.built == ["step"]
    assert report.engines[[e.name for e in report.engines].index("step")].reason == \
        "weights (backbone.safetensors) changed"

    perturb_weights(model_dir, "reference_net")  # one weights file, two engines
    assert sorted(build(model_dir, out).built) == ["motion", "reference"]

    fp16 = build(model_dir, out, "fp16")  # another precision: its own engines...
    assert sorted(fp16.built) == ALL
    assert build(model_dir, out).built == []  # ...beside the fp32 ones, which stay current
    assert len(json.loads((out / "manifest.json").read_text())["engines"]) == 2 * len(ALL)


def test_a_spec_change_rebuilds_that_engine_only(model_dir, tmp_path, stub_export, monkeypatch):
    out = tmp_path / "engines"
    build(model_dir, out)
    original = build_module.export_specs

    def widened(config, **kwargs):
        specs = original(config, **kwargs)
        decoder = specs["vae_decoder"]
        dim = dataclasses.replace(decoder.dims[0], max=decoder.dims[0].max + 4)
        specs["vae_decoder"] = dataclasses.replace(decoder, dims=(dim,))
        return specs

    monkeypatch.setattr(build_module, "export_specs", widened)
    report = build(model_dir, out)
    assert report.built == ["vae_decoder"]
    assert "spec changed" in report.engines[-1].reason


def test_modified_or_missing_files_are_rebuilt_and_old_files_removed(model_dir, tmp_path, stub_export):
    out = tmp_path / "engines"
    build(model_dir, out)
    entries = json.loads((out / "manifest.json").read_text())["engines"]
    (out / entries["onnxruntime/fp32/face_locator"]["file"]).write_text("tampered")
    (out / entries["onnxruntime/fp32/speed_encoder"]["file"]).unlink()
    assert sorted(build(model_dir, out).built) == ["face_locator", "speed_encoder"]

    old_step = out / entries["onnxruntime/fp32/step"]["file"]
    perturb_weights(model_dir, "backbone")
    build(model_dir, out)
    assert not old_step.exists(), "a replaced engine's file is deleted"
    files = {p.name for p in out.iterdir()} - {"manifest.json"}
    assert len(files) == len(ALL)


def test_weights_digest_covers_the_tensors_not_the_file_layout(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    path = model_dir / "face_locator.safetensors"
    state = load_file(str(path))
    before = read_side.weights_digest(path)
    save_file(state, str(tmp_path / "a.safetensors"), metadata={"part": "face_locator", "format": "pt"})
    save_file(state, str(tmp_path / "b.safetensors"), metadata={"other": "metadata"})
    assert read_side.weights_digest(tmp_path / "a.safetensors") == before
    assert read_side.weights_digest(tmp_path / "b.safetensors") == before
    state["conv_in.bias"][0] += 1e-6
    save_file(state, str(tmp_path / "c.safetensors"))
    assert read_side.weights_digest(tmp_path / "c.safetensors") != before


def test_engine_files_are_named_by_their_identity(model_dir, tmp_path, stub_export):
    out = tmp_path / "engines"
    build(model_dir, out)
    build(model_dir, out, "fp16")
    entries = json.loads((out / "manifest.json").read_text())["engines"]
    step32, step16 = entries["onnxruntime/fp32/step"], entries["onnxruntime/fp16/step"]
    assert step32["file"] == f"step.fp32.{step32['key'][:16]}.onnx"
    assert step16["file"] == f"step.fp16.{step16['key'][:16]}.onnx"
    assert step32["key"] == write_side.engine_key(step32["identity"])
    assert len({e["file"] for e in entries.values()}) == len(entries)


def test_runtime_refuses_stale_engines_with_one_clear_line(model_dir, tmp_path, stub_export):
    out = tmp_path / "engines"
    build(model_dir, out)
    records = read_side.read_engines(out, model_dir, "onnxruntime", "fp32", "any", "any")
    assert set(records) == set(ALL)
    assert records["step"].inputs[0].name == "noisy_latents"

    perturb_weights(model_dir, "backbone")
    with pytest.raises(StaleEngineError) as err:
        load_components("onnxruntime", model_dir, out)  # refused before any session is created
    message = str(err.value)
    assert "\n" not in message
    assert "step engine" in message and "other weights" in message
    assert f"emo-rt build-engines --weights {model_dir} --backend onnxruntime --precision fp32 --out {out}" in message

    build(model_dir, out)
    load_components_ok = read_side.read_engines(out, model_dir, "onnxruntime", "fp32", "any", "any")
    assert load_components_ok["step"].path.is_file()


@pytest.mark.parametrize("damage,expected", [
    ("no_manifest", "no manifest.json"),
    ("other_config", "another config"),
    ("tampered_file", "changed after it was built"),
    ("other_interface", "another emo-rt version"),
    ("other_precision", "no onnxruntime fp16 vae_encoder engine"),
])
def test_runtime_refusals(model_dir, tmp_path, stub_export, damage, expected):
    out = tmp_path / "engines"
    build(model_dir, out)
    precision = "fp32"
    manifest_path = out / "manifest.json"
    if damage == "no_manifest":
        manifest_path.unlink()
    elif damage == "other_config":
        config = dataclasses.replace(tiny(), fps=30)
        config.save(model_dir)
    elif damage == "tampered_file":
        entry = json.loads(manifest_path.read_text())["engines"]["onnxruntime/fp32/audio_encoder"]
        (out / entry["file"]).write_text("something else")
    elif damage == "other_interface":
        data = json.loads(manifest_path.read_text())
        data["interface"] += 1
        manifest_path.write_text(json.dumps(data))
    elif damage == "other_precision":
        precision = "fp16"
    with pytest.raises(StaleEngineError, match=expected):
        read_side.read_engines(out, model_dir, "onnxruntime", precision, "any", "any")


def test_the_runtime_knows_every_engine_the_builder_makes():
    """The runtime lists the engines a render needs without importing the builder: that list must be
    the specs', in the same order (the order build-engines reports them in)."""
    assert tuple(export_specs(tiny())) == read_side.ENGINE_NAMES


def imported_modules(directory: Path) -> set[str]:
    names = set()
    for path in directory.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
    return names


def test_the_runtime_does_not_import_the_builder_or_onnx():
    """A deployment runs engines with the runtime alone: no exporter, onnx or polygraphy needed."""
    import emo_rt.runtime.backends

    runtime = imported_modules(Path(emo_rt.runtime.backends.__file__).parent)
    assert not [m for m in runtime if m.split(".")[0] in ("onnx", "onnxscript", "polygraphy")
                or m.startswith("emo_rt.export")]
