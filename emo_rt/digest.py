"""sha256 digests (hex) of what keys caches and engines: canonical JSON, file bytes, the tensors of a
safetensors file, and in-memory tensors. One implementation for the engine manifest, the reference
cache and the training caches."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch

_CHUNK = 1 << 24


def json_digest(data: object) -> str:
    """Digest of canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(path: str | Path) -> str:
    """Digest of a safetensors file's tensors (names, dtypes, shapes, bytes) in name order. The
    header's metadata and its key order are left out: safetensors writes them in a random order,
    so two saves of the same weights differ as files."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        (header_size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_size))
        start = 8 + header_size
        for name in sorted(k for k in header if k != "__metadata__"):
            info = header[name]
            digest.update(json.dumps([name, info["dtype"], info["shape"]]).encode())
            begin, end = info["data_offsets"]
            fh.seek(start + begin)
            remaining = end - begin
            while remaining:
                chunk = fh.read(min(remaining, _CHUNK))
                if not chunk:
                    raise ValueError(f"{path}: truncated safetensors file")
                digest.update(chunk)
                remaining -= len(chunk)
    return digest.hexdigest()


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Digest of named in-memory tensors (names, dtypes, shapes, bytes) in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
