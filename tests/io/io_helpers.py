"""Helpers for emo_rt.io tests: synthetic audio files, a drawn face, box overlap."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFilter


def tone(rate: int, seconds: float, freqs: tuple[float, ...] = (440.0,), amplitude: float = 0.3) -> np.ndarray:
    """(T, len(freqs)) float32: one sine per channel."""
    t = np.arange(round(rate * seconds)) / rate
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def write_with_pyav(path: Path, samples: np.ndarray, rate: int, codec: str) -> None:
    """Encode (T, C) float32 with PyAV's `codec` (aac, libmp3lame, libopus) into `path`."""
    layout = "mono" if samples.shape[1] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_audio(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Write (T, C) float32 in the format named by the suffix (wav, flac, ogg, mp3, m4a, opus.ogg)."""
    name = path.name
    if name.endswith(".opus.ogg"):
        write_with_pyav(path, samples, rate, "libopus")
    elif path.suffix in (".wav", ".flac"):
        sf.write(path, samples, rate)
    elif path.suffix == ".ogg":
        sf.write(path, samples, rate, format="OGG", subtype="VORBIS")
    elif path.suffix == ".mp3":
        write_with_pyav(path, samples, rate, "libmp3lame")
    elif path.suffix == ".m4a":
        write_with_pyav(path, samples, rate, "aac")
    else:
        raise ValueError(f"no writer for {path}")
    return path


def draw_face(
    size: tuple[int, int] = (480, 400), centre: tuple[int, int] = (200, 230), scale: float = 1.0
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A frontal cartoon portrait on a plain background.

    Returns (RGB uint8 (H, W, 3), the face ellipse's box (x, y, w, h)). Skin ellipse, hair, eyes
    with whites/irises/pupils, brows, nose with nostrils, two-tone lips, neck and shoulders.
    """
    height, width = size
    image = Image.new("RGB", (width, height), (120, 150, 190))
    draw = ImageDraw.Draw(image)
    cx, cy, s = centre[0], centre[1], scale
    face_w, face_h = 150 * s, 195 * s
    draw.rectangle([cx - 35 * s, cy + 70 * s, cx + 35 * s, cy + 140 * s], fill=(205, 160, 130))  # neck
    draw.ellipse([cx - 150 * s, cy + 120 * s, cx + 150 * s, cy + 300 * s], fill=(60, 60, 90))  # shoulders
    draw.ellipse([cx - face_w / 2 - 12 * s, cy - face_h / 2 - 18 * s, cx + face_w / 2 + 12 * s, cy + 10 * s],
                 fill=(60, 40, 25))  # hair
    draw.ellipse([cx - face_w / 2, cy - face_h / 2, cx + face_w / 2, cy + face_h / 2], fill=(225, 180, 150))
    for side in (-1, 1):
        ex = cx + side * 32 * s
        inner, outer = (cy - 38 * s, cy - 42 * s) if side > 0 else (cy - 42 * s, cy - 38 * s)
        draw.line([ex - 20 * s, inner, ex + 20 * s, outer], fill=(50, 35, 25), width=max(2, int(6 * s)))  # brow
        draw.ellipse([ex - 18 * s, cy - 25 * s, ex + 18 * s, cy - 9 * s], fill=(245, 245, 240))  # white
        draw.ellipse([ex - 8 * s, cy - 25 * s, ex + 8 * s, cy - 9 * s], fill=(70, 50, 30))  # iris
        draw.ellipse([ex - 3.5 * s, cy - 20.5 * s, ex + 3.5 * s, cy - 13.5 * s], fill=(10, 10, 10))  # pupil
        draw.arc([ex - 18 * s, cy - 27 * s, ex + 18 * s, cy - 7 * s], 180, 360, fill=(80, 50, 40),
                 width=max(1, int(2 * s)))  # upper lid
    draw.polygon([(cx, cy - 8 * s), (cx - 12 * s, cy + 28 * s), (cx + 12 * s, cy + 28 * s)], fill=(200, 150, 120))
    for side in (-1, 1):
        nx = cx + side * 9 * s
        draw.ellipse([nx - 4 * s, cy + 22 * s, nx + 4 * s, cy + 30 * s], fill=(120, 80, 70))  # nostril
    draw.chord([cx - 30 * s, cy + 40 * s, cx + 30 * s, cy + 66 * s], 0, 180, fill=(170, 60, 70))  # lower lip
    draw.chord([cx - 30 * s, cy + 34 * s, cx + 30 * s, cy + 54 * s], 180, 360, fill=(185, 75, 85))  # upper lip
    draw.line([cx - 30 * s, cy + 50 * s, cx + 30 * s, cy + 50 * s], fill=(110, 40, 45), width=max(1, int(2 * s)))
    image = image.filter(ImageFilter.GaussianBlur(1.2 * s))
    box = (round(cx - face_w / 2), round(cy - face_h / 2), round(face_w), round(face_h))
    return np.asarray(image), box


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)
