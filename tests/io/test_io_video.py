"""emo_rt.io.video: streamed H.264 + AAC mp4, exact frame counts, nothing left behind on failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from io_helpers import tone

from emo_rt.errors import InputError
from emo_rt.io.audio import num_video_frames
from emo_rt.io.video import VideoWriter, read_video


def moving_square(index: int, height: int = 64, width: int = 96) -> np.ndarray:
    """(H, W, 3) uint8: a smooth gradient with a white square that moves one pixel per frame."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
    frame[..., 2] = 120
    x = index % (width - 16)
    frame[20:36, x : x + 16] = 255
    return frame


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writes_exact_frames_with_audio_muxed(tmp_path: Path) -> None:
    audio = tone(16000, 3.3)[:, 0]  # 3.3 s mono
    num_frames = num_video_frames(audio.size, 16000, 25)
    assert num_frames == 83
    written = [moving_square(i) for i in range(num_frames)]
    out = tmp_path / "talk.mp4"
    with VideoWriter(out, fps=25, size=(64, 96), audio=audio, sample_rate=16000) as video:
        for start in range(0, num_frames, 12):  # windows of 12 frames, the last one short
            video.write(np.stack(written[start : start + 12]))
    assert leftovers(tmp_path) == ["talk.mp4"]  # no temp file left

    frames, info = read_video(out)
    assert frames.shape == (83, 64, 96, 3)
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert info.fps == 25 and info.audio_sample_rate == 16000 and info.audio_channels == 1
    assert info.audio_samples == audio.size  # AAC priming and padding trimmed: all 3.3 s, no more
    assert abs(info.audio_duration - info.video_duration) <= 1 / 25
    assert min(psnr(a, b) for a, b in zip(frames, written, strict=True)) > 35  # crf 18: near-lossless


def test_stereo_audio_and_ntsc_rate(tmp_path: Path) -> None:
    audio = tone(48000, 1.0, (440.0, 660.0))  # (T, 2)
    out = tmp_path / "stereo.mp4"
    fps = Fraction(30000, 1001)
    count = num_video_frames(audio.shape[0], 48000, fps)
    with VideoWriter(out, fps=fps, size=64, audio=audio, sample_rate=48000) as video:
        video.write(np.stack([moving_square(i, 64, 64) for i in range(count)]))
    frames, info = read_video(out)
    assert frames.shape[0] == count == 30
    assert info.fps == fps and info.audio_channels == 2
    assert abs(info.audio_duration - info.video_duration) <= 1 / float(fps)


def test_memory_stays_flat_while_streaming(tmp_path: Path) -> None:
    """Frames are encoded as they come: Python-side memory does not grow with the frame count."""
    frame = moving_square(0, 256, 256)  # 192 KiB
    audio = np.zeros(16000 * 8, np.float32)
    with VideoWriter(tmp_path / "long.mp4", 25, 256, audio, 16000, preset="ultrafast") as video:
        video.write(frame)
        tracemalloc.start()
        for i in range(199):
            video.write(moving_square(i, 256, 256))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert os.path.getsize(video._tmp) > 0  # already on disk before close
    assert peak < 20 * frame.nbytes, f"peak {peak / 2**20:.1f} MiB for 200 frames"
    assert read_video(tmp_path / "long.mp4")[1].num_frames == 200


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_failure_inside_with_leaves_nothing(tmp_path: Path, error: type[BaseException]) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(error):
        with VideoWriter(out, 25, (64, 96), tone(16000, 2.0)[:, 0], 16000) as video:
            video.write(np.stack([moving_square(i) for i in range(30)]))
            raise error()
    assert leftovers(tmp_path) == []


def test_failure_keeps_an_existing_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous render")
    with pytest.raises(Boom):
        with VideoWriter(out, 25, (64, 96), tone(16000, 1.0)[:, 0], 16000) as video:
            video.write(moving_square(0))
            raise Boom()
    assert out.read_bytes() == b"previous render" and leftovers(tmp_path) == ["out.mp4"]


def test_ctrl_c_in_a_real_process_leaves_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import signal, sys, numpy as np
        from emo_rt.io.video import VideoWriter
        # a process started in the background by a non-interactive shell inherits SIGINT ignored;
        # a user's Ctrl-C reaches a foreground process with Python's default handler
        signal.signal(signal.SIGINT, signal.default_int_handler)
        frame = np.zeros((128, 128, 3), np.uint8)
        with VideoWriter({str(tmp_path / "out.mp4")!r}, 25, 128, np.zeros(16000 * 600, np.float32), 16000) as v:
            for i in range(15000):  # 10 minutes: far more than the test waits for
                frame[..., 0] = i % 256
                v.write(frame)
                if i == 10:
                    print("writing", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    time.sleep(0.3)
    assert any(name.endswith(".part.mp4") for name in leftovers(tmp_path))  # the temp file exists
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0 and b"KeyboardInterrupt" in stderr
    assert leftovers(tmp_path) == []


def test_no_frames_written_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no frames"):
        with VideoWriter(tmp_path / "out.mp4", 25, 64, None):
            pass
    assert leftovers(tmp_path) == []


def test_wrong_frames_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"uint8 \(N, 64, 96, 3\)"):
        with VideoWriter(tmp_path / "out.mp4", 25, (64, 96), None) as video:
            video.write(np.zeros((2, 96, 64, 3), np.uint8))  # (W, H) swapped
    with pytest.raises(ValueError, match="uint8"):
        with VideoWriter(tmp_path / "out.mp4", 25, (64, 96), None) as video:
            video.write(np.zeros((2, 64, 96, 3), np.float32))
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "out.mp4", 25, (63, 96), None)
    assert leftovers(tmp_path) == []


def test_output_directory_checked_up_front(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4", 25, 64, None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        VideoWriter(tmp_path / "file" / "out.mp4", 25, 64, None)
    with pytest.raises(InputError, match="is a directory"):
        VideoWriter(tmp_path, 25, 64, None)
    assert leftovers(tmp_path) == ["file"]


def test_unwritable_directory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    elif sys.platform == "linux" and Path("/sys").is_dir():
        locked = Path("/sys")  # sysfs refuses new files even to root
    else:
        pytest.skip("root can write anywhere here")
    try:
        with pytest.raises(InputError, match="cannot write to output video directory"):
            VideoWriter(locked / "out.mp4", 25, 64, None)
    finally:
        if locked.is_relative_to(tmp_path):
            locked.chmod(0o700)
