"""Contact sheets: a grid of frames in one PNG (`--preview sheet.png`), written atomically."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from emo_rt.io.files import atomic_output

GAP = 4  # pixels between tiles and around the sheet
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)


def preview_indices(num_frames: int, count: int) -> list[int]:
    """`count` evenly spaced frame indices in [0, num_frames), first and last included.

    A streaming renderer keeps only these frames for the sheet, never the whole video.
    """
    if num_frames <= 0 or count <= 0:
        return []
    if count >= num_frames:
        return list(range(num_frames))
    if count == 1:
        return [0]
    return sorted({round(i * (num_frames - 1) / (count - 1)) for i in range(count)})


def contact_sheet(
    frames: Sequence[np.ndarray] | np.ndarray,
    path: str | os.PathLike[str],
    *,
    columns: int = 6,
    label: str | None = None,
    frame_labels: Sequence[str] | None = None,
    tile_width: int | None = None,
) -> Path:
    """Write frames (N, H, W, 3) uint8 as a grid PNG; returns the path.

    label: a title line above the grid. frame_labels: one caption per tile (e.g. frame numbers).
    tile_width: downscale tiles to this width (keeps the aspect); default: frame size.
    """
    tiles = [np.asarray(frame) for frame in frames]
    if not tiles:
        raise ValueError("contact_sheet needs at least one frame")
    if frame_labels is not None and len(frame_labels) != len(tiles):
        raise ValueError(f"{len(frame_labels)} frame labels for {len(tiles)} frames")
    height, width = tiles[0].shape[:2]
    if any(t.shape != (height, width, 3) or t.dtype != np.uint8 for t in tiles):
        raise ValueError(f"frames must all be uint8 ({height}, {width}, 3)")
    if tile_width is not None and tile_width < width:
        height, width = max(1, round(height * tile_width / width)), tile_width

    font = ImageFont.load_default()
    line_height = 14
    caption = line_height if frame_labels is not None else 0
    title = line_height + GAP if label else 0
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new(
        "RGB",
        (GAP + columns * (width + GAP), GAP + title + rows * (height + caption + GAP)),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    if label:
        draw.text((GAP, GAP), label, fill=TEXT, font=font)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        x = GAP + col * (width + GAP)
        y = GAP + title + row * (height + caption + GAP)
        image = Image.fromarray(tile)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        sheet.paste(image, (x, y))
        if frame_labels is not None:
            draw.text((x, y + height + 1), frame_labels[i], fill=TEXT, font=font)

    with atomic_output(path, "preview") as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)
