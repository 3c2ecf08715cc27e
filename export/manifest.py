"""Engine manifest, write side: `<engine dir>/manifest.json` records, per engine, everything that
changes its content (the identity, hashed into its key and file name) plus the interface the
runtime needs to call it. The format's constants and digests live with the runtime's reader
(emo_rt/runtime/backends/manifest.py) and are imported from there: one implementation, so the
builder records exactly what the runtime recomputes.

    {"format": 1, "interface": 1, "engines": {"<backend>/<precision>/<name>": {
        "name", "backend", "precision", "key", "file", "files": {file: sha256},
        "identity": {"weights": {file: sha256}, "config", "spec", "code", "precision", "backend",
                     "opset", ["backend_version", "device", "builder"] (non-portable engines)},
        "backend_version", "device", "portable", "inputs", "outputs", "dims", "fixed_shape",
        "tools": {...}, "seconds": {...}, "built_at"}}}

Digests are sha256 hex: of engine files' bytes; of the tensors in a weights file (`weights_digest`:
names, dtypes, shapes and bytes, not the header's metadata); of canonical JSON (config:
`EmoConfig.to_dict()`, spec: `ExportSpec.describe()`, identity).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from emo_rt.digest import file_digest, json_digest, weights_digest
from emo_rt.io.files import write_json_atomic
from emo_rt.runtime.backends.manifest import (
    FORMAT_VERSION,
    INTERFACE_VERSION,
    MANIFEST_NAME,
    config_digest,
    entry_id,
    files_problem,
)

__all__ = ["FORMAT_VERSION", "INTERFACE_VERSION", "MANIFEST_NAME", "config_digest", "engine_file_name",
           "engine_key", "entry_id", "file_digest", "files_intact", "json_digest", "load_manifest",
           "save_manifest", "weights_digest", "what_changed"]


def engine_key(identity: dict) -> str:
    return json_digest(identity)


def engine_file_name(name: str, precision: str, key: str, suffix: str) -> str:
    """Engine files are named by everything that changes them: the key hashes the identity."""
    return f"{name}.{precision}.{key[:16]}{suffix}"


def load_manifest(out_dir: Path) -> dict:
    """The manifest in `out_dir`, or an empty one. An unreadable manifest is rebuilt, not trusted."""
    path = Path(out_dir) / MANIFEST_NAME
    empty = {"format": FORMAT_VERSION, "interface": INTERFACE_VERSION, "engines": {}}
    if not path.is_file():
        return empty
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        warnings.warn(f"{path} is not valid JSON ({err}): rebuilding every engine", stacklevel=2)
        return empty
    if data.get("format") != FORMAT_VERSION or data.get("interface") != INTERFACE_VERSION:
        # another emo-rt version's engines: nothing in it can be reused
        return empty
    return data


def save_manifest(out_dir: Path, manifest: dict) -> Path:
    return write_json_atomic(Path(out_dir) / MANIFEST_NAME, manifest, indent=2, sort_keys=True)


def files_intact(out_dir: Path, entry: dict) -> bool:
    """Every file of the entry exists with the digest it was built with."""
    return files_problem(out_dir, entry) is None


def what_changed(old: dict | None, new: dict) -> str:
    """A short reason for a rebuild: which identity fields differ."""
    if old is None:
        return "not built yet"
    if old.get("key") == engine_key(new):
        return "files missing or modified"
    before = old.get("identity", {})
    changed = []
    for field, value in new.items():
        if before.get(field) == value:
            continue
        if field == "weights":
            files = sorted(k for k in value if before.get("weights", {}).get(k) != value[k])
            changed.append(f"weights ({', '.join(files)})")
        else:
            changed.append(field)
    return ", ".join(changed) + " changed"
