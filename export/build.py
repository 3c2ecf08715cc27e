"""`build_engines`: what `emo-rt build-engines` runs. Builds the engines that are missing or stale,
reuses those that are current, and records each one in the manifest as soon as it is done (an
interrupted build keeps its finished engines).

An engine is current when its manifest entry's key equals the key of what would be built now
(weights of the parts it holds, config, spec, code, precision, backend; for TensorRT also the
TensorRT version, device and builder options) and its files still have their recorded digests.
"""

from __future__ import annotations

import datetime
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from emo_rt.config import EmoConfig
from emo_rt.errors import EmoError
from emo_rt.export import manifest as mf
from emo_rt.export.onnx_export import OPSET, TORCH_DTYPES, export_onnx
from emo_rt.export.quantize import QUANTIZED, quantize_int8
from emo_rt.export.specs import PRECISIONS, ExportSpec, TensorSpec, export_specs
from emo_rt.io.files import atomic_path
from emo_rt.runtime.progress import progress_bar

BACKENDS = ("onnxruntime", "tensorrt")
_PACKAGE_ROOT = Path(__file__).resolve().parent
# Source whose edits change what an export produces: the model code and the export wrappers.
_CODE_FILES = ("wrappers.py", "onnx_export.py")


@dataclass
class EngineReport:
    name: str
    action: str  # "built" | "copied" (an int8 set's fp32 engine, from the fp32 set) | "reused"
    reason: str  # why it was built or copied ("" when reused)
    path: Path
    size_bytes: int
    seconds: float


@dataclass
class BuildReport:
    backend: str
    precision: str
    out_dir: Path
    backend_version: str
    device: str
    engines: list[EngineReport] = field(default_factory=list)

    @property
    def built(self) -> list[str]:
        return [e.name for e in self.engines if e.action == "built"]

    @property
    def copied(self) -> list[str]:
        return [e.name for e in self.engines if e.action == "copied"]

    @property
    def reused(self) -> list[str]:
        return [e.name for e in self.engines if e.action == "reused"]

    def summary(self) -> str:
        lines = [f"{self.backend} {self.backend_version} {self.precision} engines in {self.out_dir} "
                 f"({self.device}): {len(self.built)} built, "
                 + (f"{len(self.copied)} copied from the fp32 set, " if self.copied else "")
                 + f"{len(self.reused)} reused"]
        for e in self.engines:
            why = f" ({e.reason})" if e.reason else ""
            lines.append(f"  {e.name:16} {e.action:7} {e.size_bytes / 2**20:9.1f} MiB {e.seconds:7.1f} s{why}")
        return "\n".join(lines)


def code_digest() -> str:
    """Digest of the source that defines what an export computes, and of the library versions
    that define the rest (diffusers' VAE and ResNet blocks, transformers' wav2vec2, the exporter)."""
    import diffusers
    import onnx
    import onnxscript
    import transformers

    import emo_rt.models

    models_dir = Path(emo_rt.models.__file__).resolve().parent
    files = sorted(models_dir.glob("*.py")) + [_PACKAGE_ROOT / name for name in _CODE_FILES]
    return mf.json_digest({
        "files": {f"{p.parent.name}/{p.name}": mf.file_digest(p) for p in files},
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "onnx": onnx.__version__,
                     "onnxscript": onnxscript.__version__},
    })


def quantize_digest() -> str:
    """Digest of export/quantize.py and of the onnxruntime whose quantiser it drives."""
    import onnxruntime

    return mf.json_digest({"file": mf.file_digest(_PACKAGE_ROOT / "quantize.py"),
                           "onnxruntime": onnxruntime.__version__})


def backend_target(backend: str) -> tuple[str, str, bool]:
    """(backend version, device name, portable) of what this machine builds for `backend`.
    ONNX files are portable (any onnxruntime, any provider); TensorRT plans are tied to the
    TensorRT version and the GPU they were built on."""
    if backend == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__, f"{platform.machine()} CPU", True
    from emo_rt.export.tensorrt_build import tensorrt_target

    version, device = tensorrt_target()
    return version, device, False


def _weights_digests(model_dir: Path, parts: set[str]) -> dict[str, str]:
    """file name -> tensors digest of each part's safetensors file."""
    digests = {}
    for part in sorted(parts):
        path = model_dir / f"{part}.safetensors"
        if not path.is_file():
            raise EmoError(f"{path} not found: {model_dir} is not a complete model directory")
        digests[path.name] = mf.weights_digest(path)
    return digests


def _builder_options() -> dict:
    from emo_rt.export.tensorrt_build import BUILDER_OPTIONS

    return BUILDER_OPTIONS


def build_engines(model_dir: str | Path, backend: str = "onnxruntime", precision: str = "fp32",
                  out_dir: str | Path = "engines", progress: bool = True,
                  names: Iterable[str] | None = None) -> BuildReport:
    """Build the engines of the model in `model_dir` into `out_dir`; see the module docstring."""
    if backend not in BACKENDS:
        raise EmoError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise EmoError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "int8" and backend != "onnxruntime":
        raise EmoError(f"--precision int8 builds onnxruntime engines (CPU, quantised); {backend} builds fp32 or fp16")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = EmoConfig.load(model_dir)
    specs = export_specs(config)
    selected = list(specs) if names is None else list(names)
    unknown = [n for n in selected if n not in specs]
    if unknown:
        raise EmoError(f"unknown engine(s) {', '.join(unknown)}: choose from {', '.join(specs)}")
    version, device, portable = backend_target(backend)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = mf.load_manifest(out_dir)
    report = BuildReport(backend, precision, out_dir, version, device)

    shared = {"config": mf.config_digest(config), "code": code_digest(), "precision": precision,
              "backend": backend, "opset": OPSET}
    weights = _weights_digests(model_dir, {p for n in selected for p in specs[n].parts})
    plan: list[tuple[ExportSpec, dict, str]] = []
    for name in selected:
        spec = specs[name]
        identity = {**shared, "spec": spec.digest(),
                    "weights": {f"{p}.safetensors": weights[f"{p}.safetensors"] for p in spec.parts}}
        if precision == "int8" and name in QUANTIZED:  # also what quantises it
            identity["quantize"] = quantize_digest()
        if not portable:
            identity.update(backend_version=version, device=device, builder=_builder_options())
        old = manifest["engines"].get(mf.entry_id(backend, precision, name))
        if old is not None and old.get("key") == mf.engine_key(identity) and mf.files_intact(out_dir, old):
            report.engines.append(EngineReport(name, "reused", "", out_dir / old["file"],
                                               _size(out_dir, old), 0.0))
        else:
            plan.append((spec, identity, mf.what_changed(old, identity)))

    with _Progress(progress, [s.name for s, _, _ in plan], report) as bar:
        model = None
        for spec, identity, reason in plan:
            if model is None:  # loaded once, and only when something needs building
                from emo_rt.models import EmoModel

                bar.status(spec.name, "loading weights")
                model = EmoModel.from_pretrained(model_dir, dtype=TORCH_DTYPES[precision])
            entry = _build_one(spec, identity, model, backend, precision, out_dir, version, device,
                               portable, bar, _fp32_twin(manifest, out_dir, backend, precision, spec.name, identity))
            key = mf.entry_id(backend, precision, spec.name)
            old = manifest["engines"].get(key)
            manifest["engines"][key] = entry
            mf.save_manifest(out_dir, manifest)
            _remove_unreferenced(out_dir, old, manifest)
            seconds = sum(entry["seconds"].values())
            action = "copied" if "copy" in entry["seconds"] else "built"
            report.engines.append(EngineReport(spec.name, action, reason, out_dir / entry["file"],
                                               _size(out_dir, entry), seconds))
            bar.done(spec.name, f"{action} in {seconds:.1f} s ({reason})")
    order = {n: i for i, n in enumerate(selected)}
    report.engines.sort(key=lambda e: order[e.name])
    return report


def _fp32_twin(manifest: dict, out_dir: Path, backend: str, precision: str, name: str, identity: dict) -> dict | None:
    """In an int8 set, the engines that stay fp32 are the fp32 set's files: the current fp32 ONNX of
    `name` in `out_dir` (its manifest entry), if there is one, is copied rather than exported again."""
    if backend != "onnxruntime" or precision != "int8" or name in QUANTIZED:
        return None
    twin = manifest["engines"].get(mf.entry_id(backend, "fp32", name))
    if twin is None or twin.get("key") != mf.engine_key({**identity, "precision": "fp32"}):
        return None
    return twin if mf.files_intact(out_dir, twin) and len(twin["files"]) == 1 else None


def _build_one(spec: ExportSpec, identity: dict, model, backend: str, precision: str, out_dir: Path,
               version: str, device: str, portable: bool, bar: "_Progress", fp32_twin: dict | None = None) -> dict:
    key = mf.engine_key(identity)
    onnx_identity = {k: v for k, v in identity.items() if k not in ("backend", "backend_version", "device", "builder")}
    if backend == "onnxruntime":
        onnx_path = out_dir / mf.engine_file_name(spec.name, precision, key, ".onnx")
    else:  # the ONNX is an intermediate, named by its own (backend-free) identity
        (out_dir / "onnx").mkdir(exist_ok=True)
        onnx_path = out_dir / "onnx" / mf.engine_file_name(spec.name, precision, mf.engine_key(onnx_identity), ".onnx")
    if backend == "tensorrt" and onnx_path.is_file():  # written atomically: present means complete
        bar.status(spec.name, "reusing the exported ONNX")
        seconds, files, num_nodes, folded = {}, [onnx_path], None, None
    elif fp32_twin is not None:
        bar.status(spec.name, "copying the fp32 engine")
        started = time.perf_counter()
        with atomic_path(onnx_path) as copied:
            shutil.copyfile(out_dir / fp32_twin["file"], copied)
        seconds, files = {"copy": time.perf_counter() - started}, [onnx_path]
        num_nodes, folded = fp32_twin["onnx_nodes"], fp32_twin["tools"]["polygraphy_folded"]
    else:
        bar.status(spec.name, "exporting ONNX")
        exported = export_onnx(spec, model, onnx_path, precision)
        seconds, files, num_nodes, folded = dict(exported.seconds), exported.files, exported.num_nodes, exported.folded
        if precision == "int8" and spec.name in QUANTIZED:
            bar.status(spec.name, "quantising to int8")
            started = time.perf_counter()
            with atomic_path(onnx_path) as quantized:
                quantize_int8(onnx_path, quantized, spec.name, model)
            seconds["quantize"] = time.perf_counter() - started
            import onnx

            num_nodes = len(onnx.load(str(onnx_path), load_external_data=False).graph.node)
    if backend == "tensorrt":
        for other in onnx_path.parent.glob(f"{spec.name}.{precision}.*.onnx*"):
            if other.name not in (onnx_path.name, onnx_path.name + ".data"):
                other.unlink()  # an intermediate of an older identity
        from emo_rt.export.tensorrt_build import build_engine, timing_cache_path

        bar.status(spec.name, "building TensorRT engine")
        plan_path = out_dir / mf.engine_file_name(spec.name, precision, key, ".plan")
        seconds.update(build_engine(onnx_path, plan_path, spec, timing_cache_path(out_dir, version, device)))
        files = [plan_path]
    bar.status(spec.name, "hashing")
    return {
        "name": spec.name, "backend": backend, "precision": precision, "key": key,
        "file": files[0].relative_to(out_dir).as_posix(),
        "files": {p.relative_to(out_dir).as_posix(): mf.file_digest(p) for p in files},
        "identity": identity, "backend_version": version, "device": device, "portable": portable,
        "inputs": [_io(t, precision) for t in spec.inputs],
        "outputs": [_io(t, precision) for t in spec.outputs],
        "dims": spec.describe()["dims"], "fixed_shape": spec.fixed_shape,
        "onnx_nodes": num_nodes,
        "tools": {"torch": torch.__version__, "opset": OPSET, "polygraphy_folded": folded},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _io(tensor: TensorSpec, precision: str) -> dict:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype_for(precision)}


def _size(out_dir: Path, entry: dict) -> int:
    return sum((out_dir / name).stat().st_size for name in entry["files"] if (out_dir / name).is_file())


def _remove_unreferenced(out_dir: Path, old: dict | None, manifest: dict) -> None:
    """Delete the files of a replaced entry that no entry refers to any more."""
    if old is None:
        return
    referenced = {name for entry in manifest["engines"].values() for name in entry.get("files", {})}
    for name in old.get("files", {}):
        if name not in referenced:
            (out_dir / name).unlink(missing_ok=True)


class _Progress:
    """One bar row per engine to build (0/1 until built) with its status; silent when disabled."""

    def __init__(self, enabled: bool, names: list[str], report: BuildReport):
        self.progress = progress_bar("status", enabled=enabled and bool(names))
        if names and enabled:
            self.progress.console.print(f"building {len(names)} {report.backend} {report.precision} engine(s) "
                                        f"into {report.out_dir} ({report.device})")
        self.tasks = {n: self.progress.add_task(n, total=1, status="queued") for n in names}

    def __enter__(self) -> "_Progress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def status(self, name: str, text: str) -> None:
        self.progress.update(self.tasks[name], status=text)

    def done(self, name: str, text: str) -> None:
        self.progress.update(self.tasks[name], status=text, completed=1)
