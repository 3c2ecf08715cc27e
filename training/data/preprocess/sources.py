"""The folder walk: every video file (any nesting) and every folder of images is one source.

Clip ids, identities and splits come from the input's manifest.json when it lists the file (the
synthetic corpus has one), else: the id from the relative path, the identity from the parent folder
(or, for files at the top, the file name without a trailing "_<number>", as HDTF names them), and
the split from a hash of the identity (90 / 5 / 5 % train / val / test).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from emo_rt.errors import InputError

from .clip import Source
from .decode import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

SPLIT_SHARES = (("train", 90), ("val", 5), ("test", 5))


def find_sources(input_dir: str | Path, exclude: Path | None = None) -> list[Source]:
    """All sources under `input_dir` in a stable order; hidden entries and `exclude` are skipped."""
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"input folder not found: {root}")
    manifest = _manifest_rows(root)
    exclude = exclude.resolve() if exclude is not None else None
    sources: list[Source] = []
    used_ids: set[str] = set()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != exclude)
        files = sorted(f for f in files if not f.startswith("."))
        videos = [f for f in files if f.lower().endswith(VIDEO_EXTENSIONS)]
        images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        if images and not videos and here != root:
            rel = here.relative_to(root).as_posix()
            sources.append(_source(rel, here, "frames", manifest.get(rel), used_ids, tuple(images)))
        for name in videos:
            rel = (here / name).relative_to(root).as_posix()
            sources.append(_source(rel, here / name, "video", manifest.get(rel), used_ids))
    return sources


def _source(rel: str, path: Path, kind: str, row: dict | None, used_ids: set[str],
            frame_files: tuple[str, ...] = ()) -> Source:
    if row is not None:
        clip_id, identity, split = _clean_id(row["clip_id"]), row["identity"], row["split"]
    else:
        clip_id = _clean_id(rel.rsplit(".", 1)[0] if kind == "video" else rel)
        identity = identity_of(rel)
        split = split_of(identity)
    base, k = clip_id, 2
    while clip_id in used_ids:  # e.g. a.mp4 and a.mov in one folder
        clip_id, k = f"{base}_{k}", k + 1
    used_ids.add(clip_id)
    return Source(clip_id, str(path.resolve()), rel, kind, identity, split, frame_files)


def _clean_id(text: str) -> str:
    """Path -> id usable as a tensor key prefix: folders joined by "__", no dots."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text.replace("/", "__"))


def identity_of(rel: str) -> str:
    parts = rel.split("/")
    if len(parts) > 1:
        return "/".join(parts[:-1])
    stem = parts[0].rsplit(".", 1)[0]
    return re.sub(r"_\d+$", "", stem) or stem


def split_of(identity: str) -> str:
    bucket = int(hashlib.sha1(identity.encode()).hexdigest()[:8], 16) % 100
    for name, share in SPLIT_SHARES:
        if bucket < share:
            return name
        bucket -= share
    return SPLIT_SHARES[-1][0]


def _manifest_rows(root: Path) -> dict[str, dict]:
    """manifest.json rows keyed by video path (the synthetic corpus's layout); {} when absent."""
    path = root / "manifest.json"
    if not path.is_file():
        return {}
    try:
        clips = json.loads(path.read_text())["clips"]
        return {row["video"]: row for row in clips}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{path} is not a corpus manifest ({e}); move it away to split by folder names") from None
