"""emo_rt.io.preview: contact-sheet layout, labels, atomic writes, frame picking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emo_rt.errors import InputError
from emo_rt.io.preview import GAP, contact_sheet, preview_indices


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def solid_frames(count: int, height: int = 40, width: int = 60) -> np.ndarray:
    """(N, H, W, 3) uint8, frame i filled with grey level 20 * i + 10."""
    levels = (np.arange(count) * 20 + 10).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def test_grid_layout(tmp_path: Path) -> None:
    frames = solid_frames(7)
    out = contact_sheet(frames, tmp_path / "sheet.png", columns=3)
    sheet = read_png(out)
    assert sheet.shape == (GAP + 3 * (40 + GAP), GAP + 3 * (60 + GAP), 3)  # 3 rows, 3 columns
    for i in range(7):
        row, col = divmod(i, 3)
        y, x = GAP + row * (40 + GAP) + 20, GAP + col * (60 + GAP) + 30
        assert tuple(sheet[y, x]) == (20 * i + 10,) * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]  # no temp file left


def test_labels_and_tile_width(tmp_path: Path) -> None:
    frames = list(solid_frames(4, 80, 120))
    plain = read_png(contact_sheet(frames, tmp_path / "a.png", columns=4, tile_width=60))
    assert plain.shape == (GAP + 40 + GAP, GAP + 4 * (60 + GAP), 3)
    labelled = read_png(
        contact_sheet(frames, tmp_path / "b.png", columns=4, tile_width=60,
                      label="seed 0, 25 fps", frame_labels=[f"#{i}" for i in range(4)])
    )
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] == plain.shape[1]
    title_strip = labelled[GAP : GAP + 10, GAP : GAP + 80]
    assert (title_strip > 200).any()  # text was drawn


def test_bad_input_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        contact_sheet([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8"):
        contact_sheet([np.zeros((8, 8, 3), np.float32)], tmp_path / "x.png")
    with pytest.raises(InputError, match="directory does not exist"):
        contact_sheet(solid_frames(2), tmp_path / "missing" / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_existing_sheet_replaced_atomically(tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    out.write_bytes(b"old")
    contact_sheet(solid_frames(2), out)
    assert read_png(out).shape[0] > 0 and sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]


def test_preview_indices() -> None:
    assert preview_indices(100, 5) == [0, 25, 50, 74, 99]
    assert preview_indices(3, 8) == [0, 1, 2]
    assert preview_indices(83, 1) == [0]
    assert preview_indices(0, 4) == []
    picked = preview_indices(15000, 24)
    assert len(picked) == 24 and picked[0] == 0 and picked[-1] == 14999
