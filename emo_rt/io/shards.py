"""Training shards (docs/data-format.md): clips' tensors in safetensors files plus index.json.

`ShardWriter` packs clips into shards of about `clips_per_shard` clips, each shard written to a
temporary name and renamed; the index is written last. `ShardIndex` reads the index and loads a
clip's tensors lazily (memory-mapped through safetensors.safe_open).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from emo_rt.io.files import atomic_path, write_json_atomic

INDEX_VERSION = 1
CLIP_TENSORS = ("frames", "face_mask", "face_boxes", "pose", "head_speed", "audio")


@dataclass(frozen=True)
class ClipEntry:
    id: str
    shard: str
    num_frames: int
    split: str
    identity: str
    has_audio: bool
    source: str


@dataclass
class ClipData:
    """One clip's arrays (shapes in docs/data-format.md)."""

    frames: np.ndarray  # uint8 (N, R, R, 3)
    face_mask: np.ndarray  # uint8 (R, R)
    face_boxes: np.ndarray  # float32 (N, 4)
    pose: np.ndarray  # float32 (N, 3)
    head_speed: np.ndarray  # float32 (N,)
    audio: np.ndarray | None = None  # float32 (S,) at 16 kHz

    def tensors(self, clip_id: str) -> dict[str, np.ndarray]:
        out = {f"{clip_id}.{name}": np.ascontiguousarray(getattr(self, name))
               for name in CLIP_TENSORS if getattr(self, name) is not None}
        return out


class ShardWriter:
    """Collects clips and writes them as shards; `close()` writes index.json."""

    def __init__(self, out_dir: str | Path, resolution: int, fps: int = 25, sample_rate: int = 16000,
                 clips_per_shard: int = 32, first_shard: int = 0):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.header = {"version": INDEX_VERSION, "resolution": resolution, "fps": fps,
                       "sample_rate": sample_rate}
        self.clips_per_shard = clips_per_shard
        self.entries: list[ClipEntry] = []
        self._pending: dict[str, np.ndarray] = {}
        self._pending_entries: list[dict] = []
        self._next_shard = first_shard

    def add(self, clip_id: str, data: ClipData, split: str, identity: str, source: str) -> None:
        if data.frames.shape[1:] != (self.header["resolution"],) * 2 + (3,):
            raise ValueError(f"{clip_id}: frames {data.frames.shape} do not match the shard resolution")
        self._pending.update(data.tensors(clip_id))
        self._pending_entries.append(dict(id=clip_id, num_frames=int(data.frames.shape[0]), split=split,
                                          identity=identity, has_audio=data.audio is not None,
                                          source=source))
        if len(self._pending_entries) >= self.clips_per_shard:
            self.flush()

    @property
    def pending_clips(self) -> int:
        return len(self._pending_entries)

    @property
    def pending_bytes(self) -> int:
        return sum(a.nbytes for a in self._pending.values())

    def flush(self, metadata: dict[str, str] | None = None) -> str | None:
        """Write the pending clips as the next shard; returns its name (None if nothing was pending).

        The shard's safetensors metadata holds its clips' index entries (key "clips", JSON) plus
        `metadata`, so a shard describes itself (preprocessing resumes from the shards alone)."""
        if not self._pending_entries:
            return None
        name = f"shard-{self._next_shard:05d}.safetensors"
        path = self.out_dir / name
        header = {**(metadata or {}), "clips": json.dumps(self._pending_entries),
                  "resolution": str(self.header["resolution"])}
        with atomic_path(path) as tmp:
            save_file(self._pending, str(tmp), metadata=header)
        self.entries += [ClipEntry(shard=name, **e) for e in self._pending_entries]
        self._pending, self._pending_entries = {}, []
        self._next_shard += 1
        return name

    def close(self, speed_buckets: dict | None = None, extra_entries: list[ClipEntry] = ()) -> Path:
        """Flush and write index.json (entries from earlier runs may be passed to keep them)."""
        self.flush()
        entries = list(extra_entries) + self.entries
        index = {**self.header, "speed_buckets": speed_buckets or {},
                 "clips": [asdict(e) for e in sorted(entries, key=lambda e: e.id)]}
        path = self.out_dir / "index.json"
        write_json_atomic(path, index)
        return path


class ShardIndex:
    """Read side: the index plus lazy per-clip tensor access."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "index.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {self.root} a preprocessed data directory?")
        data = json.loads(path.read_text())
        if data.get("version") != INDEX_VERSION:
            raise ValueError(f"{path}: index version {data.get('version')} (this emo-rt reads {INDEX_VERSION})")
        self.resolution: int = data["resolution"]
        self.fps: int = data["fps"]
        self.sample_rate: int = data["sample_rate"]
        self.speed_buckets: dict = data.get("speed_buckets", {})
        self.clips = [ClipEntry(**c) for c in data["clips"]]
        self._handles: dict[str, object] = {}

    def split(self, name: str) -> list[ClipEntry]:
        return [c for c in self.clips if c.split == name]

    def _handle(self, shard: str):
        if shard not in self._handles:  # one memory map per shard per process
            self._handles[shard] = safe_open(str(self.root / shard), framework="numpy")
        return self._handles[shard]

    def read(self, clip: ClipEntry, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """One tensor of a clip, optionally only rows start:stop (read without loading the rest)."""
        handle = self._handle(clip.shard)
        if start is None and stop is None:
            return handle.get_tensor(f"{clip.id}.{name}")
        return handle.get_slice(f"{clip.id}.{name}")[start:stop]

    def __getstate__(self):  # DataLoader workers reopen their own memory maps
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state
