"""emo_rt.io.image: loading, face detection (drawn and real faces), crops, resize, masks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from io_helpers import draw_face, iou
from PIL import Image

from emo_rt.errors import InputError
from emo_rt.io.image import (
    FaceBox,
    NoFaceWarning,
    detect_face,
    face_centred_square,
    face_centred_square_crop,
    face_mask,
    load_image,
    parse_face_box,
    prepare_reference,
    resize_image,
)


def as_tuple(box: FaceBox) -> tuple[int, int, int, int]:
    return (box.x, box.y, box.w, box.h)


# --- loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_load_image_formats(tmp_path: Path, fmt: str) -> None:
    face, _ = draw_face()
    path = tmp_path / f"ref.{fmt}"
    Image.fromarray(face).save(path, format=fmt.upper())
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == (480, 400, 3)
    assert np.abs(image.astype(int) - face).mean() < 3  # lossy formats are close, png exact


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_load_image_converts_to_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (80, 70)).save(path)
    assert load_image(path).shape == (70, 80, 3)


def test_load_image_applies_exif_rotation(tmp_path: Path) -> None:
    pixels = np.zeros((100, 200, 3), np.uint8)  # landscape as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, exif=exif)
    assert load_image(path).shape == (200, 100, 3)  # portrait as shown


def test_load_image_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="image file not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("not a picture\n" * 10)
    with pytest.raises(InputError, match="not an image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(InputError, match="is a directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_image_is_corrupt(tmp_path: Path, fmt: str) -> None:
    face, _ = draw_face()
    whole = tmp_path / f"whole.{fmt}"
    Image.fromarray(face).save(whole, format=fmt.upper())
    torn = tmp_path / f"torn.{fmt}"
    torn.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(torn)


def test_too_small(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    Image.new("RGB", (120, 40)).save(path)
    with pytest.raises(InputError, match=r"too small: .* is 120x40, the shorter side must be >= 64 px"):
        load_image(path)
    assert load_image(path, min_side=32).shape == (40, 120, 3)


def test_parse_face_box() -> None:
    assert parse_face_box("10,20,30,40") == FaceBox(10, 20, 30, 40)
    assert parse_face_box(" 1, 2 ,3,4 ") == FaceBox(1, 2, 3, 4)
    for bad in ["10,20,30", "a,b,c,d", "1,2,3,4,5", "1,2,0,4", "-1,2,3,4", ""]:
        with pytest.raises(InputError, match="face box"):
            parse_face_box(bad)


# --- face detection -----------------------------------------------------------------------------


@pytest.mark.parametrize("detector", ["mediapipe", "haar"])
@pytest.mark.parametrize(
    "layout",
    [
        dict(),  # face of ~150x195 in 400x480
        dict(scale=0.6, centre=(150, 200)),  # small face, off-centre
        dict(size=(600, 600), centre=(300, 300), scale=1.5),  # large face
    ],
)
def test_detects_a_drawn_face(detector: str, layout: dict) -> None:
    if detector == "mediapipe":
        pytest.importorskip("mediapipe")
    image, truth = draw_face(**layout)
    found = detect_face(image, detectors=(detector,))
    assert found is not None and found.detector == detector
    assert iou(as_tuple(found.box), truth) > 0.5
    cx, cy = found.box.x + found.box.w / 2, found.box.y + found.box.h / 2
    assert truth[0] < cx < truth[0] + truth[2] and truth[1] < cy < truth[1] + truth[3]


def test_detects_a_face_in_a_large_image() -> None:
    image, truth = draw_face(size=(2000, 1600), centre=(800, 900), scale=4.0)  # detected at 1024 px
    found = detect_face(image)
    assert found is not None and iou(as_tuple(found.box), truth) > 0.5


def test_detects_a_real_face(grace_hopper_path: Path) -> None:
    image = load_image(grace_hopper_path)  # (600, 512, 3)
    haar = detect_face(image, detectors=("haar",))
    assert haar is not None
    found = [haar]
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        pass
    else:
        mp = detect_face(image, detectors=("mediapipe",))
        assert mp is not None and mp.score > 0.7
        assert iou(as_tuple(mp.box), as_tuple(haar.box)) > 0.5  # two detectors agree
        found.append(mp)
    for face in found:  # the face is in the upper middle of this portrait, ~1/3 of its width
        cx, cy = face.box.x + face.box.w / 2, face.box.y + face.box.h / 2
        assert 0.35 * 512 < cx < 0.65 * 512 and 0.2 * 600 < cy < 0.5 * 600
        assert 0.25 * 512 < face.box.w < 0.6 * 512


def test_no_face_in_a_plain_image() -> None:
    image = np.full((256, 256, 3), (120, 150, 190), np.uint8)
    assert detect_face(image) is None


# --- crops, resize, mask ------------------------------------------------------------------------


def test_face_centred_square_crop_centres_the_face() -> None:
    image, truth = draw_face(size=(800, 800), centre=(400, 380))
    box = FaceBox(*truth)
    crop, in_crop = face_centred_square_crop(image, box, margin=0.5)
    side = round(max(box.w, box.h) * 2.0)
    assert crop.shape == (side, side, 3)
    assert abs(in_crop.x + in_crop.w / 2 - side / 2) <= 1 and abs(in_crop.y + in_crop.h / 2 - side / 2) <= 1
    assert (in_crop.w, in_crop.h) == (box.w, box.h)


def test_face_centred_square_near_an_edge_stays_inside() -> None:
    box = FaceBox(5, 300, 100, 120)  # face at the left edge of a 640 (W) x 480 (H) image
    crop = face_centred_square((480, 640), box, margin=0.6)
    assert crop.x == 0 and crop.w == crop.h == round(120 * 2.2)
    assert crop.y + crop.h <= 480
    big = face_centred_square((480, 640), FaceBox(100, 100, 400, 400), margin=0.6)
    assert (big.w, big.h, big.y) == (480, 480, 0)  # clamped to the short side


def test_resize_image_sizes_and_box() -> None:
    image = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    assert resize_image(image, 64).shape == (64, 64, 3)
    assert resize_image(image, (48, 32)).shape == (48, 32, 3)
    flat = np.zeros((300, 200, 3), np.uint8)
    flat[100:200, 50:150] = 200
    patch = resize_image(flat, 32, box=FaceBox(60, 110, 80, 80))  # inside the bright square
    assert (patch == 200).all()


def test_face_mask() -> None:
    mask = face_mask(FaceBox(20, 30, 40, 50), (128, 96), expand=0.1)
    assert mask.shape == (1, 128, 96) and mask.dtype == np.float32
    ys, xs = np.nonzero(mask[0])
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (16, 64, 25, 85)  # grown by 4 and 5 px
    assert set(np.unique(mask)) == {0.0, 1.0}
    edge = face_mask(FaceBox(0, 0, 20, 20), 64)  # growth past the border is clipped
    assert edge[0, 0, 0] == 1.0 and edge.sum() == 22 * 22


def test_prepare_reference_with_a_detected_face() -> None:
    image, truth = draw_face(size=(720, 900), centre=(520, 330))
    ref = prepare_reference(image, 256)
    assert ref.pixels.shape == (256, 256, 3) and ref.mask.shape == (1, 256, 256)
    assert ref.face_source in ("mediapipe", "haar")
    fx, fy = ref.face_box.x + ref.face_box.w / 2, ref.face_box.y + ref.face_box.h / 2
    assert abs(fx - 128) < 16 and abs(fy - 128) < 16  # face-centred
    assert ref.mask[0, round(fy), round(fx)] == 1.0 and ref.mask[0, 2, 2] == 0.0
    assert ref.crop_box.w == ref.crop_box.h


def test_prepare_reference_with_a_given_box_and_no_crop() -> None:
    image, truth = draw_face()
    given = prepare_reference(image, 128, face_box=FaceBox(*truth))
    assert given.face_source == "given"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 400x480: stretched, so a warning is expected
        with pytest.raises(UserWarning, match="stretched"):
            prepare_reference(image, 128, face_box=FaceBox(*truth), no_crop=True)
    square, truth = draw_face(size=(400, 400), centre=(200, 200))
    whole = prepare_reference(square, 128, face_box=FaceBox(*truth), no_crop=True)
    assert whole.crop_box == FaceBox(0, 0, 400, 400)
    with pytest.raises(InputError, match="outside"):
        prepare_reference(image, 128, face_box=FaceBox(1000, 1000, 10, 10))


def test_prepare_reference_without_a_face_warns_and_centre_crops() -> None:
    image = np.full((300, 500, 3), (120, 150, 190), np.uint8)
    with pytest.warns(NoFaceWarning, match="centre crop"):
        ref = prepare_reference(image, 64)
    assert ref.face_source == "none"
    assert ref.crop_box == FaceBox(100, 0, 300, 300)
    assert ref.mask[0, 32, 32] == 1.0 and ref.mask[0, 0, 0] == 0.0
