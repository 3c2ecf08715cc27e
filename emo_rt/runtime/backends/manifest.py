"""Engine manifest: the format's constants (which the builder in export/manifest.py imports), and the
read side: find the engines a render needs in
`<engine dir>/manifest.json` and refuse any that is missing, stale (other weights, config or
interface) or foreign (another backend version or device for non-portable engines, files changed
since the build), with one line that says to run `emo-rt build-engines`. The format is documented
in export/manifest.py. The runtime imports nothing from export/ (a deployment needs neither the
exporter nor onnx).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from emo_rt.config import EmoConfig
from emo_rt.digest import file_digest, json_digest, weights_digest
from emo_rt.errors import EmoError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
# The engine calling convention this runtime implements (export/wrappers.py, export/specs.py): bump
# when the names, order or meaning of an engine's inputs or outputs change; the runtime refuses
# engines whose manifest carries another interface version.
INTERFACE_VERSION = 1
ENGINE_NAMES = ("vae_encoder", "reference", "face_locator", "audio_encoder", "audio_projector",
                "speed_encoder", "motion", "step", "vae_decoder")


def config_digest(config: EmoConfig) -> str:
    return json_digest(config.to_dict())


def entry_id(backend: str, precision: str, name: str) -> str:
    """The manifest key of one engine."""
    return f"{backend}/{precision}/{name}"


def files_problem(engine_dir: Path, entry: dict) -> str | None:
    """Why the entry's files are not the ones it was built with, or None when they all are."""
    if not entry.get("files"):
        return "it lists no files"
    for file, digest in entry["files"].items():
        if not (Path(engine_dir) / file).is_file():
            return f"its file {file} is missing"
        if file_digest(Path(engine_dir) / file) != digest:
            return f"its file {file} changed after it was built"
    return None


class StaleEngineError(EmoError):
    """An engine is missing, stale or foreign: `emo-rt build-engines` (re)builds it."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]  # strings name dynamic dims
    dtype: str  # numpy/torch dtype name: float32, float16


@dataclass(frozen=True)
class EngineRecord:
    """One engine as the runtime sees it: where it is and how to call it."""

    name: str
    path: Path
    precision: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    dims: dict[str, dict[str, int]]  # name -> {"min", "opt", "max"}
    fixed_shape: bool

    def resolve(self, inputs: dict[str, tuple[int, ...]]) -> dict[str, int]:
        """Dynamic dim sizes from actual input shapes; one clear error for a shape the engine
        was not built for."""
        sizes: dict[str, int] = {}
        for info in self.inputs:
            shape = inputs[info.name]
            if len(shape) != len(info.shape):
                raise EmoError(f"{self.name} engine: {info.name} has shape {tuple(shape)}, "
                               f"it takes {_show(info.shape)}")
            for got, want in zip(shape, info.shape):
                if isinstance(want, str):
                    if sizes.setdefault(want, got) != got:
                        raise EmoError(f"{self.name} engine: inputs disagree on dimension {want} "
                                       f"({sizes[want]} vs {got})")
                elif got != want:
                    raise EmoError(f"{self.name} engine: {info.name} has shape {tuple(shape)}, it was built for "
                                   f"{_show(info.shape)}")
        for name, size in sizes.items():
            low, high = self.dims[name]["min"], self.dims[name]["max"]
            if not low <= size <= high:
                raise EmoError(f"{self.name} engine: {name} = {size} is outside the range it was built for "
                               f"[{low}, {high}]")
        return sizes

    def output_shapes(self, sizes: dict[str, int]) -> dict[str, tuple[int, ...]]:
        return {o.name: tuple(sizes[d] if isinstance(d, str) else d for d in o.shape) for o in self.outputs}

    def max_size(self, dim: str) -> int:
        return self.dims[dim]["max"]


def _show(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def read_engines(engine_dir: str | Path, model_dir: str | Path, backend: str, precision: str,
                 backend_version: str, device: str, names: tuple[str, ...] = ENGINE_NAMES,
                 check_files: bool = True) -> dict[str, EngineRecord]:
    """The records of `names`, each checked against the model in `model_dir` and this machine."""
    engine_dir, model_dir = Path(engine_dir), Path(model_dir)
    rebuild = (f"run `emo-rt build-engines --weights {model_dir} --backend {backend} "
               f"--precision {precision} --out {engine_dir}`")
    path = engine_dir / MANIFEST_NAME
    if not path.is_file():
        raise StaleEngineError(f"no engines in {engine_dir} (no {MANIFEST_NAME}): {rebuild}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise StaleEngineError(f"{path} is not valid JSON: {rebuild}") from None
    if manifest.get("format") != FORMAT_VERSION or manifest.get("interface") != INTERFACE_VERSION:
        raise StaleEngineError(f"the engines in {engine_dir} were built by another emo-rt version "
                               f"(format {manifest.get('format')}, interface {manifest.get('interface')}): {rebuild}")

    config = EmoConfig.load(model_dir)
    config_hash = config_digest(config)
    weight_hashes: dict[str, str] = {}
    records = {}
    for name in names:
        entry = manifest.get("engines", {}).get(entry_id(backend, precision, name))
        if entry is None:
            raise StaleEngineError(f"no {backend} {precision} {name} engine in {engine_dir}: {rebuild}")
        reason = _stale_reason(entry, model_dir, config_hash, weight_hashes, backend_version, device)
        if reason is None and check_files:
            reason = files_problem(engine_dir, entry)
        if reason is not None:
            raise StaleEngineError(f"the {name} engine in {engine_dir} is stale ({reason}): {rebuild}")
        records[name] = EngineRecord(
            name=name, path=engine_dir / entry["file"], precision=precision,
            inputs=tuple(TensorInfo(t["name"], tuple(t["shape"]), t["dtype"]) for t in entry["inputs"]),
            outputs=tuple(TensorInfo(t["name"], tuple(t["shape"]), t["dtype"]) for t in entry["outputs"]),
            dims=entry["dims"], fixed_shape=entry["fixed_shape"])
    return records


def _stale_reason(entry: dict, model_dir: Path, config_hash: str, weight_hashes: dict[str, str],
                  backend_version: str, device: str) -> str | None:
    identity = entry["identity"]
    if identity["config"] != config_hash:
        return f"built for another config than {model_dir / 'config.json'}"
    for file, digest in identity["weights"].items():
        if file not in weight_hashes:
            path = model_dir / file
            weight_hashes[file] = weights_digest(path) if path.is_file() else "missing"
        if weight_hashes[file] != digest:
            return f"built from other weights than {model_dir / file}"
    if not entry["portable"]:
        if entry["backend_version"] != backend_version:
            return f"built with {entry['backend']} {entry['backend_version']}, this is {backend_version}"
        if entry["device"] != device:
            return f"built for {entry['device']}, this is {device}"
    return None
