"""Video out: frames streamed into an H.264 + AAC mp4 (PyAV), written to a temp file renamed at the end.

Frames are encoded as they arrive (nothing holds the whole video); the audio is interleaved
with them. On an exception or Ctrl-C the temp file is removed and the output path is untouched.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from emo_rt.io.audio import as_fraction, decode_audio
from emo_rt.io.files import check_input_file, check_output_path, temp_path_beside

logger = logging.getLogger(__name__)

AUDIO_FRAME_SAMPLES = 1024  # AAC frame size
BT601_SMPTE170M = 6  # AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic value
LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG: what swscale's RGB -> yuv420p conversion produces


class VideoWriter:
    """Stream uint8 RGB frames (N, H, W, 3) into an mp4 with `audio` muxed.

    size: (height, width), as in the frame arrays; both even (yuv420p).
    audio: float32 (T,) mono or (T, C) with C <= 2, at `sample_rate`; None for no audio track.

        with VideoWriter("out.mp4", fps=25, size=(512, 512), audio=wave, sample_rate=16000) as video:
            for window in windows:
                video.write(window)  # (f, 512, 512, 3) uint8
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: int | float | Fraction,
        size: int | tuple[int, int],
        audio: np.ndarray | None,
        sample_rate: int = 16000,
        *,
        crf: int = 18,
        preset: str = "medium",
        audio_bitrate: int = 128_000,
    ) -> None:
        self.path = check_output_path(path, "output video")
        self.fps = as_fraction(fps)
        self.height, self.width = (size, size) if isinstance(size, int) else size
        if self.height % 2 or self.width % 2:
            raise ValueError(f"yuv420p needs even frame sizes, got (H, W) = ({self.height}, {self.width})")
        self.audio = self._check_audio(audio)  # (T, C) float32 or None
        self.sample_rate = sample_rate
        self.frames_written = 0
        self._audio_pos = 0  # samples of self.audio already sent to the encoder
        self._closed = False

        self._tmp = temp_path_beside(self.path, ".mp4")
        # If the writer is dropped without close() (or the interpreter exits), the temp file goes too.
        self._cleanup = weakref.finalize(self, Path.unlink, self._tmp, missing_ok=True)
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
            self._video = self._container.add_stream(
                "libx264", rate=self.fps, options={"crf": str(crf), "preset": preset}
            )
            self._video.width, self._video.height = self.width, self.height
            self._video.pix_fmt = "yuv420p"
            cc = self._video.codec_context
            cc.colorspace = cc.color_primaries = cc.color_trc = BT601_SMPTE170M
            cc.color_range = LIMITED_RANGE
            self._audio_stream = None
            if self.audio is not None:
                layout = "mono" if self.audio.shape[1] == 1 else "stereo"
                self._audio_stream = self._container.add_stream("aac", rate=sample_rate, layout=layout)
                self._audio_stream.bit_rate = audio_bitrate
        except BaseException:
            self._cleanup()
            raise

    @staticmethod
    def _check_audio(audio: np.ndarray | None) -> np.ndarray | None:
        if audio is None:
            return None
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]  # (T,) -> (T, 1)
        if audio.ndim != 2 or audio.shape[1] not in (1, 2) or audio.shape[0] == 0:
            raise ValueError(f"audio must be (T,) or (T, C<=2) with T > 0, got shape {audio.shape}")
        return audio

    # --- writing --------------------------------------------------------------------------------

    def write(self, frames: np.ndarray) -> None:
        """Encode (N, H, W, 3) or (H, W, 3) uint8 RGB frames, then the audio up to their end time."""
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(
                f"frames must be uint8 (N, {self.height}, {self.width}, 3), got {frames.dtype} {frames.shape}"
            )
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = self.frames_written  # time_base = 1 / fps
            self._container.mux(self._video.encode(video_frame))
            self.frames_written += 1
        # audio up to the end of the frames written so far: keeps the file interleaved
        self._write_audio(until=self.frames_written * self.sample_rate * self.fps.denominator // self.fps.numerator)

    def _write_audio(self, until: int) -> None:
        if self.audio is None:
            return
        until = min(until, self.audio.shape[0])
        layout = "mono" if self.audio.shape[1] == 1 else "stereo"
        while self._audio_pos < until:
            end = min(self._audio_pos + AUDIO_FRAME_SAMPLES, until)
            chunk = np.ascontiguousarray(self.audio[self._audio_pos : end].T)  # (C, n) planar
            audio_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            audio_frame.sample_rate = self.sample_rate
            audio_frame.pts = self._audio_pos  # time_base = 1 / sample_rate
            self._container.mux(self._audio_stream.encode(audio_frame))
            self._audio_pos = end

    # --- finishing ------------------------------------------------------------------------------

    def close(self) -> Path:
        """Flush the encoders, finish the file and rename it into place. Returns the output path."""
        if self._closed:
            return self.path
        try:
            if self.frames_written == 0:
                raise RuntimeError(f"no frames were written to {self.path}; nothing saved")
            self._write_audio(until=self.audio.shape[0] if self.audio is not None else 0)
            self._container.mux(self._video.encode(None))
            if self._audio_stream is not None:
                self._container.mux(self._audio_stream.encode(None))
            self._container.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._cleanup.detach()
        logger.info("wrote %s: %d frames at %s fps", self.path, self.frames_written, self.fps)
        return self.path

    def abort(self) -> None:
        """Stop without saving: close the container and remove the temp file."""
        self._closed = True
        try:
            self._container.close()
        except (av.error.FFmpegError, OSError) as e:  # the temp file goes anyway
            logger.debug("closing the aborted video %s: %s", self._tmp, e)
        finally:
            self._cleanup()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # includes KeyboardInterrupt
            self.abort()


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    num_frames: int  # decoded
    video_duration: float  # num_frames / fps, seconds
    video_codec: str
    pix_fmt: str
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None
    audio_samples: int | None  # decoded (priming removed by the decoder)
    audio_duration: float | None  # seconds, from the decoded samples


def read_video(path: str | os.PathLike[str]) -> tuple[np.ndarray, VideoInfo]:
    """Decode a whole video (for tests and small files): frames (N, H, W, 3) uint8 and its info."""
    path = check_input_file(path, "video")
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        for frame in container.decode(video):
            frames.append(frame.to_ndarray(format="rgb24"))  # (H, W, 3)
        fps = Fraction(video.average_rate) if video.average_rate else Fraction(0)
        video_codec, pix_fmt = video.codec_context.name, video.codec_context.pix_fmt
        width, height = video.codec_context.width, video.codec_context.height
    audio_codec = audio_rate = audio_channels = audio_samples = None
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            audio_codec, audio_rate = stream.codec_context.name, stream.codec_context.sample_rate
            audio_channels = stream.codec_context.channels
    if audio_codec is not None:
        audio_samples = decode_audio(path)[0].shape[0]  # encoder padding trimmed, as the renderer sees it
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8), VideoInfo(
        width=width, height=height, fps=fps, num_frames=len(frames),
        video_duration=float(len(frames) / fps) if fps else 0.0,
        video_codec=video_codec, pix_fmt=pix_fmt,
        audio_codec=audio_codec, audio_sample_rate=audio_rate, audio_channels=audio_channels,
        audio_samples=audio_samples,
        audio_duration=audio_samples / audio_rate if audio_samples is not None and audio_rate else None,
    )
