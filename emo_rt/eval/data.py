"""Held-out clips with their ground truth: a preprocessed shard folder (frames, audio, face mask)
joined with the synthetic corpus's per-frame sidecars (mouth, brows, blink, head pose).

Frame k of a shard clip is frame `start_frame + k` of its source video (`start_frame` from the
shard folder's report.json; 0 for every synthetic clip, which preprocessing keeps whole), and the
sidecar sits beside the source: CORPUS/<source without extension>.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo_rt.errors import InputError

# what the evaluator regresses, in the sidecars' own units (0..1, relative width, degrees)
LABELS = ("mouth_open", "mouth_width", "brow_raise", "blink", "yaw", "pitch", "roll")


@dataclass
class EvalClip:
    """One held-out clip: the shard's arrays and the sidecar's curves over the same frames."""

    id: str
    identity: str
    frames: np.ndarray  # uint8 (N, R, R, 3), face-centred crops
    face_mask: np.ndarray  # uint8 (R, R), 1 inside the clip's union face box
    face_boxes: np.ndarray  # float32 (N, 4) x, y, w, h in crop pixels
    audio: np.ndarray  # float32 (S,) mono 16 kHz, S = N * 640
    truth: dict[str, np.ndarray]  # LABELS + "head_speed" -> (N,) float64
    speed_level: float  # the corpus's 0 (near still) .. 1 (lively) for this clip

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


class HeldOutData:
    """Shard folder + corpus folder -> clips of a split with ground truth."""

    def __init__(self, shards: str | Path, corpus: str | Path):
        from emo_rt.io.shards import ShardIndex

        self.shards, self.corpus = Path(shards), Path(corpus)
        if not self.shards.is_dir():
            raise InputError(f"data folder {self.shards} not found: pass --data SHARDS (made by `emo-rt preprocess`)")
        if not self.corpus.is_dir():
            raise InputError(f"corpus folder {self.corpus} not found: pass --corpus CORPUS_DIR (made by "
                             "`emo-rt synth-data`, holding clips/<id>.json ground truth)")
        try:
            self.index = ShardIndex(self.shards)
        except (FileNotFoundError, ValueError) as err:
            raise InputError(str(err)) from None
        report = self.shards / "report.json"
        self.start_frames: dict[str, int] = {}
        if report.is_file():
            self.start_frames = {c["id"]: int(c.get("start_frame", 0))
                                 for c in json.loads(report.read_text()).get("clips", [])}

    def entries(self, split: str = "test"):
        """Index entries of `split` that have audio and a sidecar; InputError when there are none."""
        clips = [c for c in self.index.split(split) if c.has_audio and self.sidecar_path(c).is_file()]
        if not clips:
            total = len(self.index.split(split))
            raise InputError(f"{self.shards} has no {split}-split clips with audio and a sidecar in {self.corpus} "
                             f"({total} {split} clips in the index): check --data and --corpus")
        return clips

    def sidecar_path(self, entry) -> Path:
        return (self.corpus / entry.source).with_suffix(".json")

    def truth(self, entry) -> tuple[dict[str, np.ndarray], float]:
        """Per-frame ground truth of a shard clip (LABELS + head_speed, (N,) each) and its speed level."""
        sidecar = json.loads(self.sidecar_path(entry).read_text())
        start = self.start_frames.get(entry.id, 0)
        stop = start + entry.num_frames
        rows = sidecar["frames"]
        out = {}
        for name in LABELS + ("head_speed",):
            values = np.asarray(rows[name], np.float64)
            if values.size < stop:
                raise InputError(f"{self.sidecar_path(entry)}: {values.size} frames of {name}, the shard clip "
                                 f"{entry.id} needs frames {start}..{stop}")
            out[name] = values[start:stop]
        return out, float(sidecar.get("speed_level", float("nan")))

    def load(self, entry) -> EvalClip:
        truth, speed_level = self.truth(entry)
        read = lambda name: self.index.read(entry, name)  # noqa: E731
        return EvalClip(entry.id, entry.identity, read("frames"), read("face_mask"), read("face_boxes"),
                        read("audio"), truth, speed_level)
