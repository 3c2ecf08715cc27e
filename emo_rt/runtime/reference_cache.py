"""Reference features per identity, computed once per portrait: kept in memory (the last few
identities) and, when given a directory, on disk for repeated renders of one portrait.

The key holds everything that changes the features: the prepared reference (pixels and face mask),
the weights of the parts that compute them (VAE, ReferenceNet, FaceLocator), the config, the backend
with its dtype/precision and device, and the format and emo-rt versions. An entry is one safetensors
file, written to a temporary name and renamed; it carries its key and a digest of its tensors, and
an entry that cannot be read, belongs to another key or fails its digest is ignored with a warning
and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

import emo_rt
from emo_rt.digest import json_digest, tensors_digest, weights_digest
from emo_rt.io.files import atomic_path
from emo_rt.io.image import Reference

FORMAT_VERSION = 1
WEIGHT_PARTS = ("vae", "reference_net", "face_locator")  # the parts EmoPipeline.prepare runs
REFERENCE_ENGINES = ("vae_encoder", "reference", "face_locator")  # their engines
ENV_DIRECTORY = "EMO_RT_CACHE_DIR"

ReferenceState = dict  # {"latents": (1, C, h, w), "features": [(1, L_i, C_i)], "face_latents": (1, C, h, w)}


def default_cache_dir() -> Path:
    """$EMO_RT_CACHE_DIR, else $XDG_CACHE_HOME/emo-rt/reference, else ~/.cache/emo-rt/reference."""
    if os.environ.get(ENV_DIRECTORY):
        return Path(os.environ[ENV_DIRECTORY])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "emo-rt" / "reference"


def weights_key(model_dir: str | Path) -> str:
    """Digest of the tensors of the weight files that the reference features come from."""
    paths = [Path(model_dir) / f"{part}.safetensors" for part in WEIGHT_PARTS]
    return json_digest({p.name: _file_weights_digest(p.resolve(), *_stat(p)) for p in paths})


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


@lru_cache(maxsize=64)
def _file_weights_digest(path: Path, size: int, mtime_ns: int, inode: int) -> str:
    """Memoised per process by the file's stat (a rewritten file has a new one)."""
    return weights_digest(path)


def components_identity(components) -> dict:
    """What about the runtime changes the numbers: backend, device, dtype or engine precisions."""
    records = getattr(components, "records", None) or {}
    return {"backend": components.name, "device": str(getattr(components, "device", "cpu")),
            "dtype": str(getattr(components, "dtype", "")),
            "engines": {n: r.precision for n, r in records.items() if n in REFERENCE_ENGINES}}


def _live_weights_token(components) -> tuple:
    """In-memory only: the identity and in-place version of every parameter the reference
    features come from, so weights changed under a live pipeline (training, load_state_dict)
    never meet features cached before the change."""
    model = getattr(components, "model", None)
    if model is None:
        return ()
    return tuple((id(p), p._version) for part in WEIGHT_PARTS for p in getattr(model, part).parameters())


class ReferenceCache:
    """`fetch(reference, components, compute)` returns the reference state from memory, disk, or
    `compute()` (then stored). `directory=None`: memory only. `weights_key` names the weights on
    disk (`weights_key(model_dir)`); without it nothing is written to or read from disk."""

    def __init__(self, directory: str | Path | None = None, weights_key: str = "", capacity: int = 4,
                 max_entries: int = 64):
        self.directory = Path(directory) if directory is not None and weights_key else None
        self.weights_key = weights_key
        self.capacity = capacity  # identities in memory
        self.max_entries = max_entries  # files on disk (oldest used are removed first)
        self._memory: OrderedDict[tuple, ReferenceState] = OrderedDict()
        self.last_source = ""  # "memory" | "disk" | "computed": where the last fetch came from

    def key(self, reference: Reference, components) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps({
            "format": FORMAT_VERSION, "emo_rt": emo_rt.__version__, "weights": self.weights_key,
            "config": components.config.to_dict(), "runtime": components_identity(components),
            "pixels": [list(reference.pixels.shape), str(reference.pixels.dtype)],
            "mask": [list(reference.mask.shape), str(reference.mask.dtype)],
        }, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(reference.pixels).tobytes())
        digest.update(np.ascontiguousarray(reference.mask).tobytes())
        return digest.hexdigest()

    def path(self, key: str) -> Path | None:
        return self.directory / f"{key[:40]}.safetensors" if self.directory is not None else None

    def fetch(self, reference: Reference, components, compute: Callable[[], ReferenceState]) -> ReferenceState:
        key = self.key(reference, components)
        memory_key = (key, _live_weights_token(components))
        if memory_key in self._memory:
            self._memory.move_to_end(memory_key)
            self.last_source = "memory"
            return self._memory[memory_key]
        state = self._load(key, getattr(components, "device", torch.device("cpu")))
        self.last_source = "disk"
        if state is None:
            state = compute()
            self.last_source = "computed"
            self._store(key, state)
        self._memory[memory_key] = state
        while len(self._memory) > self.capacity:
            self._memory.popitem(last=False)
        return state

    # ---- disk -----------------------------------------------------------------------------------
    def _load(self, key: str, device: torch.device) -> ReferenceState | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {name: fh.get_tensor(name) for name in fh.keys()}
            if meta.get("format") != str(FORMAT_VERSION) or meta.get("key") != key:
                raise ValueError("written for another reference, weights or runtime")
            if meta.get("digest") != tensors_digest(tensors):
                raise ValueError("its tensors do not match their digest")
            count = int(meta["features"])
            state = {"latents": tensors["latents"], "face_latents": tensors["face_latents"],
                     "features": [tensors[f"features.{i}"] for i in range(count)]}
            if set(tensors) != {"latents", "face_latents", *(f"features.{i}" for i in range(count))}:
                raise ValueError("unexpected tensors")
        except (OSError, SafetensorError, ValueError, KeyError) as err:
            warnings.warn(f"reference cache: ignoring {path} ({err}); recomputing it", stacklevel=3)
            return None
        os.utime(path)  # most recently used: pruned last
        return {"latents": state["latents"].to(device), "face_latents": state["face_latents"].to(device),
                "features": [x.to(device) for x in state["features"]]}

    def _store(self, key: str, state: ReferenceState) -> None:
        path = self.path(key)
        if path is None:
            return
        from safetensors.torch import save_file

        tensors = {"latents": state["latents"], "face_latents": state["face_latents"],
                   **{f"features.{i}": x for i, x in enumerate(state["features"])}}
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"format": str(FORMAT_VERSION), "key": key, "features": str(len(state["features"])),
                "digest": tensors_digest(tensors)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp), metadata=meta)
        except OSError as err:  # a cache that cannot be written costs speed, not the render
            warnings.warn(f"reference cache: cannot write {path} ({err.strerror or err})", stacklevel=3)
            return
        self._prune()

    def _prune(self) -> None:
        entries = []
        for entry in self.directory.glob("*.safetensors"):
            try:
                entries.append((entry.stat().st_mtime_ns, entry))
            except FileNotFoundError:  # pruned by another render meanwhile
                continue
        for _, old in sorted(entries)[: max(0, len(entries) - self.max_entries)]:
            old.unlink(missing_ok=True)


def cache_dir_option(value: str | None) -> Path | None:
    """`render --reference-cache`: None -> the default directory, "off" -> None (no disk cache)."""
    if value is None:
        return default_cache_dir()
    return None if value.lower() in ("off", "none", "") else Path(value)
