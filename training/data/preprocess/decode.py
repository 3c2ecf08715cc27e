"""Frames at a fixed output rate (25 fps) from a video file (PyAV) or a folder of images, and a
clip's audio as mono 16 kHz aligned to its first frame.

Rate conversion uses presentation timestamps, so odd (29.97, 30, 50) and variable frame rates
come out right: output frame k shows the last source frame that starts before (k + 0.5) / fps, and
a video lasting D seconds gives round(D * fps) frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from emo_rt.errors import InputError
from emo_rt.io.audio import decode_audio, resample

from .reject import BAD_FRAMES, CORRUPT, NO_AUDIO, NO_VIDEO, ClipRejected

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class VideoProbe:
    width: int
    height: int
    source_fps: float  # average rate the container declares (0 if unknown)
    has_audio: bool
    audio_offset: float  # seconds from the first video frame to the first audio sample


def probe_video(path: Path) -> VideoProbe:
    """Stream layout of a video file; raises ClipRejected (no video stream, corrupt)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipRejected(NO_VIDEO, f"{path.name} has no video stream")
            video = container.streams.video[0]
            cc = video.codec_context
            if not cc.width or not cc.height:
                raise ClipRejected(CORRUPT, f"{path.name}: the video stream has no frame size")
            rate = float(video.average_rate) if video.average_rate else 0.0
            audio = container.streams.audio[0] if container.streams.audio else None
            offset = 0.0
            if audio is not None:
                offset = _start_seconds(audio) - _start_seconds(video)
            return VideoProbe(cc.width, cc.height, rate, audio is not None, offset)
    except av.error.FFmpegError as e:
        raise ClipRejected(CORRUPT, f"{path.name} cannot be opened: {e.strerror or e}") from None


def _start_seconds(stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def video_frames(path: Path, fps: int) -> Iterator[np.ndarray]:
    """RGB uint8 (H, W, 3) frames of a video file at `fps`; ClipRejected(CORRUPT) on decode errors."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fallback_step = 1.0 / float(stream.average_rate) if stream.average_rate else 1.0 / fps
            yield from resample_frames(_timed_frames(container, stream, fallback_step), fps)
    except av.error.FFmpegError as e:
        raise ClipRejected(CORRUPT, f"{path.name}: decoding failed: {e.strerror or e}") from None


def _timed_frames(container, stream, fallback_step: float) -> Iterator[tuple[np.ndarray, float, float]]:
    """(frame, start time in seconds, duration in seconds) in presentation order."""
    for i, frame in enumerate(container.decode(stream)):
        t = frame.time if frame.time is not None else i * fallback_step
        duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else fallback_step
        yield frame.to_ndarray(format="rgb24"), float(t), duration


def resample_frames(frames: Iterable[tuple[np.ndarray, float, float]], fps: int) -> Iterator[np.ndarray]:
    """Frames with (start, duration) times -> frames at `fps` (nearest earlier frame, see module doc)."""
    k = 0  # next output frame
    previous, t0, last_t, last_duration = None, None, 0.0, 0.0
    for image, t, duration in frames:
        if t0 is None:
            t0 = t
        t = max(t - t0, last_t)  # times relative to the first frame, never going back
        if previous is not None:
            while (k + 0.5) / fps <= t:
                yield previous
                k += 1
        previous, last_t, last_duration = image, t, duration
    if previous is None:
        return
    total = max(round((last_t + last_duration) * fps), 1)
    while k < total:
        yield previous
        k += 1


def folder_frames(files: list[Path]) -> Iterator[np.ndarray]:
    """RGB uint8 frames of an image sequence (taken as already at the output rate); every image
    must decode and have the first one's size, else ClipRejected(BAD_FRAMES)."""
    size = None
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ClipRejected(BAD_FRAMES, f"{path.name} is not a readable image")
        if size is None:
            size = image.shape[:2]
        elif image.shape[:2] != size:
            raise ClipRejected(BAD_FRAMES, f"{path.name} is {image.shape[1]}x{image.shape[0]}, "
                                           f"the first frame {size[1]}x{size[0]}")
        yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def audio_track(path: Path, probe: VideoProbe, sample_rate: int) -> np.ndarray:
    """The video's audio as mono float32 at `sample_rate`, sample 0 at the first video frame's time
    (the streams' start-time offset applied); ClipRejected(NO_AUDIO / CORRUPT)."""
    try:
        samples, native_rate = decode_audio(path)
    except InputError as e:
        raise ClipRejected(NO_AUDIO if "no audio stream" in str(e) else CORRUPT, str(e)) from None
    samples = resample(samples, native_rate, sample_rate)
    shift = round(probe.audio_offset * sample_rate)
    if shift > 0:  # audio starts after the first frame
        samples = np.concatenate([np.zeros(shift, np.float32), samples])
    elif shift < 0:
        samples = samples[-shift:]
    return samples


def audio_segment(track: np.ndarray, start_frame: int, num_frames: int, fps: int, sample_rate: int) -> np.ndarray:
    """Samples of frames start_frame .. start_frame + num_frames: round(num_frames / fps * sample_rate)
    of them (docs/data-format.md), zero-padded past the end of the track."""
    first = round(start_frame / fps * sample_rate)
    length = round(num_frames / fps * sample_rate)
    out = np.zeros(length, np.float32)
    part = track[first: first + length]
    out[: part.size] = part
    return out
