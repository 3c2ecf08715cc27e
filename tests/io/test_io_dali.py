"""emo_rt.io.dali: DALI pipelines and the soundfile/PyAV/Pillow fallback give the same tensors.

- audio: equal. DALI decodes wav/flac to soundfile's very samples (other containers are decoded by
  the fallback), and both paths resample with the fallback's polyphase filter: DALI's own resampler
  does not low-pass when downsampling and aliases (the control below).
- images, against a control: both resize in float with the same filter and border rule; their
  disagreement must be under 1/20 of what one uint8 rounding step costs (Pillow's uint8 output vs
  its float output).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from io_helpers import write_audio
from PIL import Image

from emo_rt.errors import InputError
from emo_rt.io.audio import decode_audio
from emo_rt.io.dali import InputPipelines, import_dali
from emo_rt.io.image import FaceBox, load_image, prepare_reference, resize_image

needs_dali = pytest.mark.skipif(import_dali() is None, reason="nvidia-dali is not installed")
EDGE = 400  # samples at 16 kHz (25 ms) left out at each end: the filters' reach differs there


@pytest.fixture(scope="module")
def dali_pipes() -> InputPipelines:
    return InputPipelines(backend="dali", device="cpu")


@pytest.fixture(scope="module")
def fallback_pipes() -> InputPipelines:
    return InputPipelines(backend="fallback")


# --- which path runs ----------------------------------------------------------------------------


def test_fallback_is_chosen_and_reported_when_dali_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # makes `import nvidia.dali` fail
    pipes = InputPipelines()
    assert pipes.backend == "fallback" and pipes.device == "cpu"
    assert "fallback" in repr(pipes)
    with pytest.raises(RuntimeError, match="nvidia-dali is not installed"):
        InputPipelines(backend="dali")


@needs_dali
def test_dali_is_chosen_when_importable() -> None:
    pipes = InputPipelines()
    assert pipes.backend == "dali"
    assert pipes.device == ("cuda" if torch.cuda.is_available() else "cpu")


# --- audio --------------------------------------------------------------------------------------


def band_limited(rate: int, seconds: float, channels: int = 2) -> np.ndarray:
    """(T, C) float32: noise low-passed to 6 kHz (0.4 of `rate` below 15 kHz) plus two tones (inside the
    16 kHz passband)."""
    from scipy.signal import butter, sosfiltfilt

    rng = np.random.default_rng(0)
    t = np.arange(round(rate * seconds)) / rate
    out = []
    for c in range(channels):
        cutoff = min(6000, 0.4 * rate)
        noise = sosfiltfilt(butter(10, cutoff, fs=rate, output="sos"), rng.standard_normal(t.size) * 0.1)
        out.append(noise + 0.3 * np.sin(2 * np.pi * (440 + 200 * c) * t) + 0.1 * np.sin(2 * np.pi * 3000 * t))
    return np.stack(out, axis=1).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


DECODER = {".wav": "dali", ".flac": "dali", ".ogg": "soundfile", ".mp3": "pyav", ".m4a": "pyav"}


@needs_dali
@pytest.mark.parametrize(
    ("name", "rate"),
    [("band.wav", 44100), ("band.flac", 22050), ("band.ogg", 48000), ("band.mp3", 44100), ("band.m4a", 32000),
     ("up.wav", 8000), ("up.flac", 11025)],
)
def test_audio_dali_matches_fallback(
    tmp_path: Path, dali_pipes: InputPipelines, fallback_pipes: InputPipelines, name: str, rate: int
) -> None:
    """The same samples (DALI decodes wav/flac bit-exactly), resampled by the same polyphase filter."""
    path = write_audio(tmp_path / name, band_limited(rate, 3.0), rate)
    from_dali = dali_pipes.load_audio(path, 16000).numpy()
    assert dali_pipes.last_audio_decoder == DECODER[path.suffix]  # ogg: DALI's libvorbis differs (2.4e-7)
    from_fallback = fallback_pipes.load_audio(path, 16000).numpy()
    assert from_dali.dtype == from_fallback.dtype == np.float32
    assert from_dali.shape == from_fallback.shape == (48000,)
    assert np.array_equal(from_dali, from_fallback)
    native, native_rate = dali_pipes.decode_audio(path)  # (T, 2): the track a video carries
    assert native_rate == rate and np.array_equal(native, decode_audio(path, channels=True)[0])


@needs_dali
def test_resampling_does_not_alias(dali_pipes: InputPipelines) -> None:
    """A 12 kHz tone has no place in 16 kHz audio: it is filtered out, not folded to 4 kHz."""
    from nvidia.dali import fn, pipeline_def, types

    t = np.arange(44100) / 44100
    tone = (0.5 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)  # (44100,)
    assert rms(dali_pipes.resample(tone, 44100, 16000)[EDGE:-EDGE]) < 1e-3 * rms(tone)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, exec_async=False, exec_pipelined=False)
    def dali_resample():  # the control, why resampling is not DALI's: its resampler keeps the tone
        pcm = fn.external_source(name="pcm", dtype=types.FLOAT, ndim=1)
        return fn.audio_resample(pcm, in_rate=44100.0, out_rate=16000.0)

    pipe = dali_resample()
    pipe.build()
    pipe.feed_input("pcm", [tone])
    (aliased,) = pipe.run()
    assert rms(np.array(aliased[0])[EDGE:-EDGE]) > 0.9 * rms(tone)


@needs_dali
def test_speech_dali_matches_fallback(
    speech_wav: Path | None, dali_pipes: InputPipelines, fallback_pipes: InputPipelines
) -> None:
    """Full-band speech at 22.05 kHz: decoded by DALI, downsampled by the polyphase filter: equal."""
    if speech_wav is None:
        pytest.skip("espeak-ng is not installed")
    from_dali = dali_pipes.load_audio(speech_wav, 16000).numpy()
    assert dali_pipes.last_audio_decoder == "dali"
    assert np.array_equal(from_dali, fallback_pipes.load_audio(speech_wav, 16000).numpy())


@needs_dali
def test_dali_audio_errors_are_input_errors(
    tmp_path: Path, dali_pipes: InputPipelines
) -> None:
    good = write_audio(tmp_path / "good.wav", band_limited(16000, 1.0), 16000)
    torn = tmp_path / "torn.wav"
    torn.write_bytes(good.read_bytes()[:20])  # RIFF/WAVE magic: goes to DALI's decoder, which refuses it
    with pytest.raises(InputError, match="audio file is corrupt or unsupported: .*torn.wav .*fmt"):
        dali_pipes.load_audio(torn)  # the fallback decoder's message, as `emo_rt.io.audio.load_audio` gives
    assert dali_pipes.load_audio(good).shape == (16000,)  # a failed run does not break the next one
    assert dali_pipes.last_audio_decoder == "dali"
    with pytest.raises(InputError, match="too short"):
        dali_pipes.load_audio(good, min_seconds=2.0)
    with pytest.raises(InputError, match="not found"):
        dali_pipes.load_audio(tmp_path / "missing.wav")
    (tmp_path / "notes.wav").write_text("not audio\n" * 10)
    with pytest.raises(InputError, match="not an audio file"):
        dali_pipes.load_audio(tmp_path / "notes.wav")


# --- reference image ----------------------------------------------------------------------------


def uint8_rounding_control(image: np.ndarray, size: tuple[int, int], box: FaceBox | None) -> float:
    """Max gap (in 0-255 levels) between Pillow's uint8 and float results of the same resize."""
    rounded = resize_image(image, size, box).astype(np.float32)
    return float(np.abs(rounded - resize_image(image, size, box, exact=True)).max())


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory: pytest.TempPathFactory, grace_hopper_path: Path) -> dict[str, Path]:
    """The real portrait as jpg (4:2:0), png, lossless webp, and a jpg stored sideways with EXIF rotation."""
    folder = tmp_path_factory.mktemp("refs")
    with Image.open(grace_hopper_path) as opened:
        photo = opened.convert("RGB")
    files = {"jpg": grace_hopper_path}
    photo.save(folder / "ref.png")
    files["png"] = folder / "ref.png"
    photo.save(folder / "ref.webp", lossless=True)
    files["webp"] = folder / "ref.webp"
    exif = Image.Exif()
    exif[0x0112] = 8  # displayed after a 90 degree turn
    photo.transpose(Image.Transpose.ROTATE_270).save(folder / "sideways.jpg", quality=92, exif=exif)
    files["exif-jpg"] = folder / "sideways.jpg"
    return files


@needs_dali
@pytest.mark.parametrize("kind", ["jpg", "png", "webp", "exif-jpg"])
@pytest.mark.parametrize(
    ("resolution", "crop"),
    [
        (256, "face"),  # the render path: face-centred square, touching the image border
        (97, "face"),  # odd size
        ((64, 48), None),  # whole image, non-uniform scale
        (256, FaceBox(3, 7, 101, 101)),  # upscaling a small region near the corner
    ],
)
def test_reference_dali_matches_fallback(
    reference_files: dict[str, Path], dali_pipes: InputPipelines, fallback_pipes: InputPipelines,
    kind: str, resolution: int | tuple[int, int], crop: str | FaceBox | None,
) -> None:
    path = reference_files[kind]
    image = load_image(path)
    box = prepare_reference(image, 64).crop_box if crop == "face" else crop
    size = (resolution, resolution) if isinstance(resolution, int) else resolution
    from_dali = dali_pipes.load_reference(path, resolution, box)
    from_fallback = fallback_pipes.load_reference(path, resolution, box)
    assert from_dali.shape == from_fallback.shape == (3, *size)
    assert from_dali.dtype == from_fallback.dtype == torch.float32
    assert from_fallback.min() >= -1.0 and from_fallback.max() <= 1.0

    error = float((from_dali - from_fallback).abs().max()) * 127.5  # in 0-255 levels
    control = uint8_rounding_control(image, size, box)
    assert control > 0.5  # the control is meaningful: one rounding step is visible
    assert error <= control / 20, f"DALI vs fallback {error:.4f} levels, uint8 control {control:.3f}"


@needs_dali
def test_reference_crop_box_must_be_inside(reference_files: dict[str, Path], dali_pipes: InputPipelines) -> None:
    with pytest.raises(InputError, match="not inside"):
        dali_pipes.load_reference(reference_files["png"], 64, FaceBox(400, 500, 200, 200))


def test_fallback_reference_is_normalised_chw(reference_files: dict[str, Path], fallback_pipes: InputPipelines) -> None:
    pixels = fallback_pipes.load_reference(reference_files["png"], 32)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    assert -1.0 <= float(pixels.min()) < 0.0 < float(pixels.max()) <= 1.0
