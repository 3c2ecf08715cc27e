"""Reference image in: load, find the face, face-centred square crop, resize, face-region mask.

Face detectors (both ship their models; nothing is downloaded): mediapipe 0.10.21 FaceDetection
first, OpenCV's frontal-face Haar cascade second.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emo_rt.errors import InputError
from emo_rt.io.files import check_input_file

logger = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 64  # pixels; smaller references carry too little identity to animate
FACE_MARGIN = 0.6  # square crop side = (1 + 2 * margin) * the face box's longer side
MASK_EXPAND = 0.1  # the face mask grows the box by this fraction of its size on each side
DETECT_MAX_SIDE = 1024  # detectors see the image downscaled to this (Haar is slow on photos)


class NoFaceWarning(UserWarning):
    """No face was found in the reference image; a centre crop was used instead."""


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned box in pixels: top-left corner (x, y), width w, height h."""

    x: int
    y: int
    w: int
    h: int

    def expanded(self, fraction: float) -> FaceBox:
        """Grow by `fraction` of the width/height on each side (about the same centre)."""
        dx, dy = round(self.w * fraction), round(self.h * fraction)
        return FaceBox(self.x - dx, self.y - dy, self.w + 2 * dx, self.h + 2 * dy)

    def clipped(self, width: int, height: int) -> FaceBox:
        """Intersect with the image rectangle [0, width) x [0, height)."""
        x0, y0 = max(self.x, 0), max(self.y, 0)
        x1, y1 = min(self.x + self.w, width), min(self.y + self.h, height)
        return FaceBox(x0, y0, max(x1 - x0, 0), max(y1 - y0, 0))

    def mapped(self, origin: FaceBox, size: tuple[int, int]) -> FaceBox:
        """This box in the coordinates of `origin` (a crop box) resized to `size` (H, W)."""
        sy, sx = size[0] / origin.h, size[1] / origin.w
        x0, y0 = (self.x - origin.x) * sx, (self.y - origin.y) * sy
        x1, y1 = (self.x + self.w - origin.x) * sx, (self.y + self.h - origin.y) * sy
        return FaceBox(round(x0), round(y0), round(x1) - round(x0), round(y1) - round(y0))


@dataclass(frozen=True)
class FaceDetection:
    box: FaceBox
    score: float  # detector confidence (Haar gives no score: 1.0)
    detector: Literal["mediapipe", "haar"]


def load_image(path: str | os.PathLike[str], min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """Load png/jpg/webp (anything Pillow reads) as RGB uint8 (H, W, 3), EXIF rotation applied."""
    path = check_input_file(path, "image")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            rgb = np.array(im.convert("RGB"))  # (H, W, 3) uint8, writable (torch.from_numpy-safe)
    except UnidentifiedImageError as e:
        raise InputError(f"not an image Pillow can read (png, jpg, webp): {path}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"image file is corrupt or truncated: {path} ({e})") from e
    height, width = rgb.shape[:2]
    if min(height, width) < min_side:
        raise InputError(
            f"image is too small: {path} is {width}x{height}, the shorter side must be >= {min_side} px"
        )
    return rgb


def parse_face_box(text: str) -> FaceBox:
    """Parse "x,y,w,h" (integers, pixels in the source image) as given to `--face-box`."""
    parts = re.split(r"\s*,\s*", text.strip())
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise InputError(f'face box must be four integers "x,y,w,h", got "{text}"') from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise InputError(f'face box needs x, y >= 0 and w, h > 0, got "{text}"')
    return FaceBox(x, y, w, h)


# --- face detection -----------------------------------------------------------------------------


@functools.cache
def mediapipe_detector(model_selection: int) -> object | None:
    """mediapipe FaceDetection (0: short range, faces within ~2 m; 1: full range); None if absent."""
    try:
        from mediapipe.python.solutions.face_detection import (
            FaceDetection as MPFaceDetection,
        )
    except ImportError:
        logger.info("mediapipe is not installed; using the OpenCV Haar cascade for faces")
        return None
    return MPFaceDetection(model_selection=model_selection, min_detection_confidence=0.2)  # filtered later


@functools.cache
def _haar_cascade() -> object:
    import cv2

    path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV Haar cascade missing at {path}: install opencv-python-headless<5")
    return cascade


def _detect_mediapipe(image: np.ndarray, min_confidence: float) -> list[FaceDetection]:
    height, width = image.shape[:2]
    found: list[FaceDetection] = []
    for model_selection in (0, 1):
        detector = mediapipe_detector(model_selection)
        if detector is None:
            return []
        result = detector.process(np.ascontiguousarray(image))
        for det in result.detections or []:
            score = float(det.score[0])
            if score < min_confidence:
                continue
            rel = det.location_data.relative_bounding_box
            box = FaceBox(
                round(rel.xmin * width), round(rel.ymin * height),
                round(rel.width * width), round(rel.height * height),
            ).clipped(width, height)
            if box.w > 0 and box.h > 0:
                found.append(FaceDetection(box, score, "mediapipe"))
        if found:
            break
    return found


def _detect_haar(image: np.ndarray) -> list[FaceDetection]:
    import cv2

    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    min_face = max(24, min(image.shape[:2]) // 10)
    boxes = _haar_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_face, min_face))
    return [FaceDetection(FaceBox(int(x), int(y), int(w), int(h)), 1.0, "haar") for x, y, w, h in boxes]


Detector = Literal["mediapipe", "haar"]


def detect_face(
    image: np.ndarray, min_confidence: float = 0.5, detectors: tuple[Detector, ...] = ("mediapipe", "haar")
) -> FaceDetection | None:
    """The largest face in an RGB uint8 (H, W, 3) image, or None.

    Detectors are tried in order until one finds a face: mediapipe (short-range model, then
    full-range; skipped when mediapipe is not installed), then the OpenCV Haar cascade.
    """
    height, width = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    small = image if scale == 1.0 else resize_image(image, (round(height * scale), round(width * scale)))
    for name in detectors:
        faces = _detect_mediapipe(small, min_confidence) if name == "mediapipe" else _detect_haar(small)
        if faces:
            best = max(faces, key=lambda f: f.box.w * f.box.h)
            if scale != 1.0:
                b = best.box
                box = FaceBox(round(b.x / scale), round(b.y / scale), round(b.w / scale), round(b.h / scale))
                best = FaceDetection(box.clipped(width, height), best.score, best.detector)
            logger.debug("face %s found by %s (score %.2f)", best.box, best.detector, best.score)
            return best
    return None


# --- crops, resize, mask ------------------------------------------------------------------------


def face_centred_square(image_size: tuple[int, int], box: FaceBox, margin: float = FACE_MARGIN) -> FaceBox:
    """The square crop box (in image pixels) centred on `box`, side (1 + 2 * margin) * max(w, h).

    `image_size` is (H, W). The square is shrunk to fit the image and shifted to stay inside it,
    so near an edge the face is off-centre rather than padded.
    """
    height, width = image_size
    side = min(round(max(box.w, box.h) * (1 + 2 * margin)), height, width)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x = min(max(round(cx - side / 2), 0), width - side)
    y = min(max(round(cy - side / 2), 0), height - side)
    return FaceBox(x, y, side, side)


def centre_square(image_size: tuple[int, int]) -> FaceBox:
    """The largest centred square in an (H, W) image."""
    height, width = image_size
    side = min(height, width)
    return FaceBox((width - side) // 2, (height - side) // 2, side, side)


def face_centred_square_crop(
    image: np.ndarray, box: FaceBox, margin: float = FACE_MARGIN
) -> tuple[np.ndarray, FaceBox]:
    """Crop (H, W, 3) -> (S, S, 3) around the face; returns (crop, face box in crop coordinates)."""
    crop_box = face_centred_square(image.shape[:2], box, margin)
    crop = image[crop_box.y : crop_box.y + crop_box.h, crop_box.x : crop_box.x + crop_box.w]
    in_crop = FaceBox(box.x - crop_box.x, box.y - crop_box.y, box.w, box.h).clipped(crop_box.w, crop_box.h)
    return crop, in_crop


def resize_image(
    image: np.ndarray, size: int | tuple[int, int], box: FaceBox | None = None, *, exact: bool = False
) -> np.ndarray:
    """Resize (H, W, 3) uint8 -> (h, w, 3) with antialiased bilinear filtering.

    `size` is an int (square) or (h, w); `box` resizes only that source region, reading pixels
    beyond it where the filter reaches. Beyond the image border the edge pixels are repeated, as
    DALI's `fn.resize` does, so both give the same pixels. Returns uint8, or float32 in
    [0, 255] without rounding when `exact` (per-channel float resize: 3x slower).
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    height, width = image.shape[:2]
    box = box or FaceBox(0, 0, width, height)
    pad = math.ceil(max(box.w / out_w, box.h / out_h, 1.0)) + 1  # >= the filter's reach in pixels
    # source region + `pad` on each side, edge-replicated where it leaves the image
    y0, y1, x0, x1 = box.y - pad, box.y + box.h + pad, box.x - pad, box.x + box.w + pad
    region = image[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
    region = np.pad(
        region,
        ((max(-y0, 0), max(y1 - height, 0)), (max(-x0, 0), max(x1 - width, 0)), (0, 0)),
        mode="edge",
    )
    inner = (pad, pad, pad + box.w, pad + box.h)  # the box within `region`
    bilinear = Image.Resampling.BILINEAR
    if not exact:
        return np.array(Image.fromarray(region).resize((out_w, out_h), bilinear, box=inner))  # writable
    channels = []
    for c in range(3):
        plane = Image.fromarray(region[..., c].astype(np.float32), mode="F")
        channels.append(np.asarray(plane.resize((out_w, out_h), bilinear, box=inner)))
    return np.stack(channels, axis=-1)  # (h, w, 3) float32


def face_mask(box: FaceBox, size: int | tuple[int, int], expand: float = MASK_EXPAND) -> np.ndarray:
    """Face-region mask (1, H, W) float32: 1 inside `box` grown by `expand` per side, 0 outside."""
    height, width = (size, size) if isinstance(size, int) else size
    grown = box.expanded(expand).clipped(width, height)
    mask = np.zeros((1, height, width), np.float32)
    mask[:, grown.y : grown.y + grown.h, grown.x : grown.x + grown.w] = 1.0
    return mask


@dataclass(frozen=True)
class Reference:
    """A reference portrait ready for the model."""

    pixels: np.ndarray  # (R, R, 3) uint8 RGB
    face_box: FaceBox  # in `pixels` coordinates
    mask: np.ndarray  # (1, R, R) float32 face-region mask
    crop_box: FaceBox  # the source-image region that was resized into `pixels`
    face_source: Literal["given", "mediapipe", "haar", "none"]


def prepare_reference(
    image: np.ndarray,
    resolution: int,
    *,
    face_box: FaceBox | None = None,
    no_crop: bool = False,
    margin: float = FACE_MARGIN,
    resize: Callable[[FaceBox], np.ndarray] | None = None,
) -> Reference:
    """Face box (given or detected) -> face-centred square crop -> resize -> mask.

    `no_crop` resizes the whole image (the caller already framed it). With no face found, a centre
    crop is used, the mask covers the middle of the frame, and a NoFaceWarning is issued. `resize`
    turns the crop box into the (R, R, 3) uint8 pixels (default: `resize_image` of `image`;
    `load_inputs` passes the DALI pipelines' `reference_pixels`).
    """
    height, width = image.shape[:2]
    source: Literal["given", "mediapipe", "haar", "none"] = "given"
    if face_box is not None:
        face = face_box.clipped(width, height)
        if face.w == 0 or face.h == 0:
            raise InputError(f"face box {face_box} lies outside the {width}x{height} image")
    else:
        detection = detect_face(image)
        face = detection.box if detection else None
        source = detection.detector if detection else "none"

    if no_crop:
        crop_box = FaceBox(0, 0, width, height)
        if abs(width - height) > 0.01 * max(width, height):
            warnings.warn(f"--no-crop on a {width}x{height} image: it is stretched to a square", stacklevel=2)
    elif face is not None:
        crop_box = face_centred_square((height, width), face, margin)
    else:
        crop_box = centre_square((height, width))
        warnings.warn("no face found in the reference image: using a centre crop", NoFaceWarning, stacklevel=2)

    if face is None:  # assume the face fills the middle of the frame
        face = FaceBox(crop_box.x + crop_box.w // 4, crop_box.y + crop_box.h // 4, crop_box.w // 2, crop_box.h // 2)

    pixels = resize(crop_box) if resize is not None else resize_image(image, resolution, box=crop_box)
    face_in_output = face.mapped(crop_box, (resolution, resolution)).clipped(resolution, resolution)
    return Reference(pixels, face_in_output, face_mask(face_in_output, resolution), crop_box, source)
