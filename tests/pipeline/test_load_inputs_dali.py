"""`load_inputs` reads through the DALI input pipelines when DALI is importable and reports it;
$EMO_RT_NO_DALI=1 (or no DALI) gives the soundfile/PyAV/Pillow fallback. Both give the same audio
(track to mux and 16 kHz waveform, bit for bit), the same face crop, reference pixels within the
level the fallback's own rounding costs (a measured control below), and the same one-line
InputError for every bad file.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from emo_rt.errors import InputError
from emo_rt.io.dali import NO_DALI_ENV, import_dali
from emo_rt.io.image import resize_image
from emo_rt.pipeline import Inputs, load_inputs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REF, SPEECH = EXAMPLES / "ref.png", EXAMPLES / "speech.wav"  # 256x256 RGB png; 7 s, 16 kHz mono 16-bit
needs_dali = pytest.mark.skipif(import_dali() is None, reason="nvidia-dali is not installed")


def load(image: Path, audio: Path, backend: str, monkeypatch: pytest.MonkeyPatch, resolution: int = 128) -> Inputs:
    """`load_inputs` at 25 fps with DALI allowed ("dali") or forced off ("fallback"), warnings kept quiet."""
    if backend == "fallback":
        monkeypatch.setenv(NO_DALI_ENV, "1")
    else:
        monkeypatch.delenv(NO_DALI_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_inputs(image, audio, resolution, 25)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example speech as a 44.1 kHz stereo wav (downsampled for the model) and an 8 kHz one (upsampled)."""
    from scipy.signal import resample_poly

    folder = tmp_path_factory.mktemp("audio")
    speech, _ = sf.read(SPEECH, dtype="float32")  # (T,) at 16 kHz
    up = resample_poly(speech, 441, 160).astype(np.float32)  # (T * 2.76,) at 44.1 kHz
    sf.write(folder / "stereo44k.wav", np.stack([up, 0.7 * np.roll(up, 300)], axis=1), 44100, subtype="PCM_16")
    sf.write(folder / "phone8k.wav", resample_poly(speech, 1, 2).astype(np.float32), 8000, subtype="PCM_16")
    return {"speech": SPEECH, "stereo44k": folder / "stereo44k.wav", "phone8k": folder / "phone8k.wav"}


# --- which path runs ----------------------------------------------------------------------------


@needs_dali
def test_dali_is_used_and_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(REF, SPEECH, "dali", monkeypatch).input_backend == "dali"


def test_fallback_when_forced_or_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(REF, SPEECH, "fallback", monkeypatch).input_backend == "fallback"
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # makes `import nvidia.dali` fail
    assert load(REF, SPEECH, "dali", monkeypatch).input_backend == "fallback"


# --- same inputs --------------------------------------------------------------------------------


@needs_dali
@pytest.mark.parametrize("audio", ["speech", "stereo44k", "phone8k"])
def test_dali_gives_the_fallbacks_audio(audio_files: dict[str, Path], audio: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded by DALI (wav), resampled by the fallback's polyphase filter (as the stream and training
    are; DALI's resampler aliases when downsampling): the same arrays, bit for bit."""
    from_dali = load(REF, audio_files[audio], "dali", monkeypatch)
    fallback = load(REF, audio_files[audio], "fallback", monkeypatch)
    # the track the mp4 carries: the file's own samples, rate and channels
    assert from_dali.native_rate == fallback.native_rate
    assert from_dali.native_audio.shape == fallback.native_audio.shape
    assert np.array_equal(from_dali.native_audio, fallback.native_audio)
    # what the model hears: 16 kHz mono
    assert from_dali.waveform.dtype == fallback.waveform.dtype == np.float32
    assert np.array_equal(from_dali.waveform, fallback.waveform)


@needs_dali
@pytest.mark.parametrize("resolution", [256, 128, 97])
def test_dali_gives_the_fallbacks_reference(resolution: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from_dali = load(REF, SPEECH, "dali", monkeypatch, resolution).reference
    fallback = load(REF, SPEECH, "fallback", monkeypatch, resolution).reference
    assert from_dali.crop_box == fallback.crop_box and from_dali.face_box == fallback.face_box
    assert from_dali.face_source == fallback.face_source
    assert np.array_equal(from_dali.mask, fallback.mask)
    assert from_dali.pixels.dtype == np.uint8 and from_dali.pixels.shape == (resolution, resolution, 3)

    # Control: the exact (float) resize of the same crop. Pillow's uint8 resize rounds after each of
    # its two passes, up to one level off it (measured: 1.0 at 128, 0.90 at 97); DALI resizes in
    # float and rounds once: half a level, plus its float filter's 1/20 level (tests/io/test_io_dali.py;
    # measured 0.50). So the two may differ by the one level the fallback itself costs (measured: 1
    # level, in 14 % of the values at 128 and 8 % at 97).
    exact = resize_image(np.asarray(Image.open(REF).convert("RGB")), resolution, fallback.crop_box, exact=True)
    assert np.abs(fallback.pixels - exact).max() <= 1.0  # the control
    assert np.abs(from_dali.pixels - exact).max() <= 0.55
    assert np.abs(from_dali.pixels.astype(int) - fallback.pixels).max() <= 1
    if resolution == 256:  # the whole 256x256 image at its own size: no filtering, the same pixels
        assert np.array_equal(from_dali.pixels, fallback.pixels)


@needs_dali
@pytest.mark.parametrize("kind", ["gif", "png16"])
def test_images_dali_reads_otherwise_keep_pillows_pixels(kind: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """DALI cannot decode GIF and scales 16-bit PNG where Pillow clips: Pillow resizes those."""
    rgb = Image.open(REF).convert("RGB")
    path = tmp_path / f"ref.{kind[:3]}"
    if kind == "gif":
        rgb.convert("P").save(path)
    else:
        Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 200).save(path)  # mode I;16
    from_dali = load(path, SPEECH, "dali", monkeypatch)
    assert from_dali.input_backend == "dali"
    assert np.array_equal(from_dali.reference.pixels, load(path, SPEECH, "fallback", monkeypatch).reference.pixels)


@needs_dali
def test_files_dali_refuses_go_to_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A webp with EXIF (valid: Pillow reads it) is refused by DALI's decoder, and so is a torn wav:
    DALI is tried first, then the fallback resizes the image or gives the audio's message."""
    webp = tmp_path / "ref.webp"
    exif = Image.Exif()
    exif[0x0112] = 1  # orientation: as stored
    Image.open(REF).convert("RGB").save(webp, lossless=True, exif=exif)
    with caplog.at_level(logging.INFO, logger="emo_rt.io.dali"):
        from_dali = load(webp, SPEECH, "dali", monkeypatch)
    assert "cannot decode" in caplog.text and "resizing it with the fallback" in caplog.text
    assert np.array_equal(from_dali.reference.pixels, load(webp, SPEECH, "fallback", monkeypatch).reference.pixels)

    caplog.clear()
    torn = bad_audio(tmp_path, "torn")
    with caplog.at_level(logging.INFO, logger="emo_rt.io.dali"), pytest.raises(InputError, match="corrupt"):
        load(REF, torn, "dali", monkeypatch)
    assert "decoding it with the fallback" in caplog.text


# --- same errors --------------------------------------------------------------------------------


def bad_audio(folder: Path, kind: str) -> Path:
    """A file `load_inputs` refuses, by kind."""
    path = folder / f"{kind}.{'flac' if kind == 'cut_flac' else 'wav'}"
    good = (np.sin(np.arange(16000) / 5) * 0.3).astype(np.float32)  # (16000,): 1 s at 16 kHz
    if kind == "text":
        path.write_text("hello, I am not audio")
    elif kind == "torn":  # RIFF/WAVE header only: DALI's decoder is tried and refuses it
        sf.write(path, good, 16000, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[:20])
    elif kind == "no_samples":
        sf.write(path, good[:0], 16000)
    elif kind == "too_short":
        sf.write(path, good[:100], 16000)  # 6 ms < one frame at 25 fps
    elif kind == "nan":
        sf.write(path, np.where(np.arange(16000) == 500, np.nan, good).astype(np.float32), 16000, subtype="FLOAT")
    elif kind == "cut_flac":
        sf.write(path, good, 16000)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    return path  # "missing": never written


def bad_image(folder: Path, kind: str) -> Path:
    path = folder / f"{kind}.png"
    if kind == "corrupt_png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(np.random.default_rng(0).integers(0, 255, 300, np.uint8)))
    elif kind == "tiny":
        Image.new("RGB", (16, 16), (200, 150, 120)).save(path)
    return path


AUDIO_KINDS = ["missing", "zero_bytes", "text", "torn", "no_samples", "too_short", "nan", "cut_flac"]
IMAGE_KINDS = ["corrupt_png", "tiny"]


@pytest.mark.parametrize("kind", AUDIO_KINDS + IMAGE_KINDS)
def test_bad_inputs_give_the_same_one_line_error(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = bad_image(tmp_path, kind) if kind in IMAGE_KINDS else REF
    audio = bad_audio(tmp_path, kind) if kind in AUDIO_KINDS else SPEECH
    messages = []
    for backend in ("dali", "fallback"):
        with pytest.raises(InputError) as raised:
            load(image, audio, backend, monkeypatch)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    assert "\n" not in messages[0] and "DALI" not in messages[0]
