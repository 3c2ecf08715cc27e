"""One source (a video file or a frame folder) -> training clips (ClipData) or rejections.

Steps: (1) decode at 25 fps and track the face (landmarks, face counts); (2) decide what is kept:
runs of frames with one face, at least `min_frames` long, covered by audio where audio is needed,
cut into segments of at most `max_seconds`; (3) per segment: union face box -> square crop ->
resolution, face mask, boxes in crop pixels, head pose and speed, audio mono 16 kHz. Frames are
decoded twice (landmarks, then crops) unless they fit in `keep_frames_bytes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from emo_rt.config import EmoConfig
from emo_rt.io.shards import ClipData
from emo_rt.pose import head_speed

from . import decode, faces
from .reject import (
    CORRUPT,
    FACE_TOO_SMALL,
    NO_AUDIO,
    NO_FACE,
    SEVERAL_FACES,
    TOO_SHORT,
    ClipRejected,
)

_SD15 = EmoConfig()


@dataclass(frozen=True)
class Source:
    """One input item found by the folder walk."""

    id: str  # clip id (segments of a long source get "-000", "-001", ...)
    path: str  # absolute path: a video file or a folder of images
    relpath: str  # relative to the input folder (the index's "source")
    kind: str  # "video" | "frames"
    identity: str
    split: str
    frame_files: tuple[str, ...] = ()  # kind "frames": image file names in order


@dataclass(frozen=True)
class ClipSettings:
    """What `preprocess` makes of a source (its keyword arguments beyond the CLI's)."""

    resolution: int = 128
    fps: int = 25
    sample_rate: int = 16000
    require_audio: bool = True
    min_frames: int = _SD15.num_motion_frames + _SD15.num_frames  # one training window (n + f)
    max_seconds: float = 20.0  # longer runs of a face are cut into segments of at most this
    crop_scale: float = 1.6  # crop side / longer side of the clip's union face box
    min_face_px: float = 40.0  # median face box width (source pixels) below this: rejected
    detect_every: int = 5  # face detection (counting faces) on every k-th frame
    several_faces_fraction: float = 0.25  # sampled frames with 2+ faces above this: rejected
    keep_frames_bytes: int = 512 * 2**20  # decoded frames kept between the two passes up to this


@dataclass
class KeptClip:
    id: str
    start_frame: int  # first frame in the source (at 25 fps)
    crop: tuple[int, int, int]  # x0, y0, side of the square crop in source pixels
    data: ClipData

    @property
    def num_frames(self) -> int:
        return int(self.data.frames.shape[0])

    def record(self, fps: int) -> dict:
        return {"id": self.id, "start_frame": self.start_frame, "num_frames": self.num_frames,
                "seconds": round(self.num_frames / fps, 3), "crop": list(self.crop),
                "has_audio": self.data.audio is not None}


@dataclass
class SourceOutcome:
    source: Source
    kept: list[KeptClip] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # {"id", "reason", "detail"}


def process_source(source: Source, settings: ClipSettings) -> SourceOutcome:
    """All clips of one source, in memory; a ClipRejected becomes the outcome's only rejection."""
    outcome = SourceOutcome(source)
    try:
        outcome.kept = list(iter_clips(source, settings, outcome.rejected))
    except ClipRejected as r:
        outcome.kept = []
        outcome.rejected[:] = [{"id": source.id, "reason": r.reason, "detail": r.detail}]
    return outcome


def iter_clips(source: Source, settings: ClipSettings, rejected: list[dict]) -> Iterator[KeptClip]:
    """Yield the source's clips one at a time (only one segment's frames are held); segments that
    are not kept are appended to `rejected`. Raises ClipRejected when nothing can be kept."""
    s = settings
    # 1. decode (pass 1) and track the face
    probe = _probe(source, s)
    cache = _FrameCache(s.keep_frames_bytes)
    track = faces.track_faces(cache.tee(_frames(source, s.fps)), s.detect_every)
    total = len(track.landmarks)
    if total == 0:
        raise ClipRejected(CORRUPT, "no frame could be decoded")
    if total < s.min_frames:
        raise ClipRejected(TOO_SHORT, f"{total} frames at {s.fps} fps, at least {s.min_frames} needed")
    # 2. what is kept: frames with audio and a single face, cut into segments
    audio = _audio(source, probe, s)
    landmarks, segments = _segments_with_a_face(track, total, audio, s)
    # 3. per segment: crop geometry and motion from the landmarks
    plans = _segment_plans(source, track, landmarks, segments, s, rejected)
    # 4. pass 2: crops, one segment at a time (segments are disjoint and in order)
    frames = iter(cache.frames if cache.complete else _frames(source, s.fps))
    t = 0
    for clip_id, start, stop, crop, boxes, pose in plans:
        crops = np.empty((stop - start, s.resolution, s.resolution, 3), np.uint8)
        for frame in frames:
            if t >= start:
                crops[t - start] = crop_frame(frame, crop, s.resolution)
            t += 1
            if t == stop:
                break
        if t != stop:
            raise ClipRejected(CORRUPT, f"the second decoding ended at frame {t}, the first at {total}")
        scale = s.resolution / crop[2]
        boxes_crop = (boxes - np.float32([crop[0], crop[1], 0, 0])) * np.float32(scale)
        yield KeptClip(clip_id, start, crop, ClipData(
            frames=crops,
            face_mask=box_mask(union_box(boxes_crop), s.resolution),
            face_boxes=boxes_crop.astype(np.float32),
            pose=pose,
            head_speed=head_speed(pose).astype(np.float32),
            audio=None if audio is None else decode.audio_segment(audio, start, stop - start, s.fps, s.sample_rate),
        ))


def _probe(source: Source, s: ClipSettings):
    """The video's streams (None for a frame folder); refuses a source without the audio it needs."""
    if source.kind != "video":
        if s.require_audio:
            raise ClipRejected(NO_AUDIO, "a frame folder has no audio (use --no-audio for image-only stage-1 data)")
        return None
    probe = decode.probe_video(Path(source.path))
    if s.require_audio and not probe.has_audio:
        raise ClipRejected(NO_AUDIO, f"{Path(source.path).name} has no audio stream (use --no-audio "
                                     "for image-only stage-1 data)")
    return probe


def _audio(source: Source, probe, s: ClipSettings) -> np.ndarray | None:
    if probe is None or not probe.has_audio:
        return None
    try:
        return decode.audio_track(Path(source.path), probe, s.sample_rate)
    except ClipRejected:
        if s.require_audio:
            raise
        return None


def _segments_with_a_face(track, total: int, audio: np.ndarray | None, s: ClipSettings):
    """The usable frames' landmarks (gaps filled) and the runs of frames with one face, long enough."""
    usable = total
    if s.require_audio:
        usable = min(total, math.floor(audio.size / s.sample_rate * s.fps + 1e-6))
        if usable < s.min_frames:
            raise ClipRejected(TOO_SHORT, f"the audio covers {usable} frames, at least {s.min_frames} needed")
    landmarks = faces.fill_gaps(track.landmarks[:usable])
    found = ~np.isnan(landmarks[:, 0, 0])
    if not found.any():
        raise ClipRejected(NO_FACE, f"no face in any of {usable} frames")
    sampled = track.face_counts[:usable]
    sampled = sampled[sampled >= 0]
    several = float(np.mean(sampled >= 2)) if sampled.size else 0.0
    if several > s.several_faces_fraction:
        raise ClipRejected(SEVERAL_FACES, f"2 or more faces on {several:.0%} of the checked frames")
    segments = _segments(found, s.min_frames, round(s.max_seconds * s.fps))
    if not segments:
        longest = max(b - a for a, b in faces.runs(found))
        raise ClipRejected(NO_FACE, f"a face on {int(found.sum())} of {usable} frames, at most {longest} in a row "
                                    f"({s.min_frames} needed)")
    return landmarks, segments


def _segment_plans(source: Source, track, landmarks: np.ndarray, segments, s: ClipSettings,
                   rejected: list[dict]) -> list[tuple]:
    """(clip id, start, stop, crop, face boxes, pose) per segment whose face is large enough."""
    plans = []
    for j, (start, stop) in enumerate(segments):
        clip_id = source.id if len(segments) == 1 else f"{source.id}-{j:03d}"
        lm = landmarks[start:stop]
        boxes = faces.face_boxes(lm)
        width = float(np.median(boxes[:, 2]))
        if width < s.min_face_px:
            rejected.append({"id": clip_id, "reason": FACE_TOO_SMALL,
                             "detail": f"median face width {width:.0f} px, at least {s.min_face_px:.0f} needed"})
            continue
        crop = square_crop(union_box(boxes), track.width, track.height, s.crop_scale)
        pose = faces.head_pose(lm, track.width, track.height, s.fps)
        plans.append((clip_id, start, stop, crop, boxes, pose))
    if not plans:
        raise ClipRejected(FACE_TOO_SMALL, rejected[-1]["detail"])
    return plans


def _frames(source: Source, fps: int) -> Iterator[np.ndarray]:
    if source.kind == "video":
        return decode.video_frames(Path(source.path), fps)
    return decode.folder_frames([Path(source.path) / name for name in source.frame_files])


class _FrameCache:
    """Keeps the frames of pass 1 for pass 2 while they fit in `budget` bytes."""

    def __init__(self, budget: int):
        self.budget, self.frames, self.nbytes, self.complete = budget, [], 0, True

    def tee(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            if self.complete:
                self.nbytes += frame.nbytes
                if self.nbytes > self.budget:
                    self.complete, self.frames = False, []
                else:
                    self.frames.append(frame)
            yield frame


def _segments(found: np.ndarray, min_frames: int, max_frames: int) -> list[tuple[int, int]]:
    """Runs of frames with a face, at least min_frames long, cut into near-equal pieces of at most
    max_frames."""
    out = []
    for a, b in faces.runs(found):
        if b - a < min_frames:
            continue
        pieces = math.ceil((b - a) / max_frames)
        edges = np.linspace(a, b, pieces + 1).round().astype(int)
        out += [(int(p), int(q)) for p, q in zip(edges[:-1], edges[1:])]
    return out


def union_box(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) x, y, w, h -> (4,) the box holding them all."""
    lo = boxes[:, :2].min(axis=0)
    hi = (boxes[:, :2] + boxes[:, 2:]).max(axis=0)
    return np.concatenate([lo, hi - lo])


def square_crop(box: np.ndarray, width: int, height: int, scale: float) -> tuple[int, int, int]:
    """Square (x0, y0, side) centred on `box`, side = scale * its longer side, shrunk and shifted to
    lie inside the frame (no padding)."""
    side = int(min(round(scale * float(max(box[2], box[3]))), width, height))
    cx, cy = float(box[0] + box[2] / 2), float(box[1] + box[3] / 2)
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    return x0, y0, side


def crop_frame(frame: np.ndarray, crop: tuple[int, int, int], resolution: int) -> np.ndarray:
    x0, y0, side = crop
    patch = frame[y0:y0 + side, x0:x0 + side]
    interpolation = cv2.INTER_AREA if side > resolution else cv2.INTER_LINEAR
    return cv2.resize(patch, (resolution, resolution), interpolation=interpolation)


def box_mask(box: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (R, R): 1 on pixels whose centre lies inside `box` (x, y, w, h in crop pixels)."""
    centres = np.arange(resolution) + 0.5
    inside_x = (centres >= box[0]) & (centres <= box[0] + box[2])
    inside_y = (centres >= box[1]) & (centres <= box[1] + box[3])
    return (inside_y[:, None] & inside_x[None, :]).astype(np.uint8)
