"""emo_rt.io.dali: DALI pipelines and the soundfile/PyAV/Pillow fallback give the same tensors.

Tolerances are set against controls:
- audio: the two paths use different resamplers (DALI's Hann-windowed sinc, scipy's Kaiser
  polyphase FIR). Their disagreement must stay within twice the disagreement between scipy's
  resampler and two other good ones (ffmpeg's swresample, scipy's FFT resampler) on the same input.
- images: both resize in float with the same filter and border rule; their disagreement must be
  under 1/20 of what one uint8 rounding step costs (Pillow's uint8 output vs its float output).
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
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
    """(T, C) float32: noise low-passed to 6 kHz plus two tones (inside the 16 kHz passband)."""
    from scipy.signal import butter, sosfiltfilt

    rng = np.random.default_rng(0)
    t = np.arange(round(rate * seconds)) / rate
    out = []
    for c in range(channels):
        noise = sosfiltfilt(butter(10, 6000, fs=rate, output="sos"), rng.standard_normal(t.size) * 0.1)
        out.append(noise + 0.3 * np.sin(2 * np.pi * (440 + 200 * c) * t) + 0.1 * np.sin(2 * np.pi * 3000 * t))
    return np.stack(out, axis=1).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def control_disagreement(path: Path, fallback: np.ndarray) -> float:
    """Largest interior RMS gap between the fallback's resampler and swresample / FFT resampling."""
    from scipy.signal import resample

    native, rate = decode_audio(path)  # (T,) mono at the file's rate, as both paths see it
    fft = resample(native.astype(np.float64), fallback.size).astype(np.float32)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    frame = av.AudioFrame.from_ndarray(native[None], format="flt", layout="mono")
    frame.sample_rate = rate
    swr = np.concatenate([f.to_ndarray().ravel() for f in [*resampler.resample(frame), *resampler.resample(None)]])
    n = min(swr.size, fallback.size)
    return max(
        rms((fallback[:n] - swr[:n])[EDGE:-EDGE]),
        rms((fallback - fft)[EDGE:-EDGE]),
    )


@needs_dali
@pytest.mark.parametrize(
    ("name", "rate"),
    [("band.wav", 44100), ("band.flac", 22050), ("band.ogg", 48000), ("band.mp3", 44100), ("band.m4a", 32000)],
)
def test_audio_dali_matches_fallback(
    tmp_path: Path, dali_pipes: InputPipelines, fallback_pipes: InputPipelines, name: str, rate: int
) -> None:
    path = write_audio(tmp_path / name, band_limited(rate, 3.0), rate)
    from_dali = dali_pipes.load_audio(path, 16000).numpy()
    decoder = dali_pipes.last_audio_decoder
    assert decoder == ("dali" if path.suffix in (".wav", ".flac", ".ogg") else "pyav")  # mp3/m4a: PyAV decodes
    from_fallback = fallback_pipes.load_audio(path, 16000).numpy()
    assert from_dali.dtype == from_fallback.dtype == np.float32
    assert from_dali.shape == from_fallback.shape == (48000,)

    error = rms((from_dali - from_fallback)[EDGE:-EDGE])
    control = control_disagreement(path, from_fallback)
    assert error <= 2 * control, f"DALI vs fallback {error:.2e}, control {control:.2e}"
    assert error < 0.01 * rms(from_fallback)  # and small in absolute terms: below -40 dB


@needs_dali
def test_speech_dali_matches_fallback(
    speech_wav: Path | None, dali_pipes: InputPipelines, fallback_pipes: InputPipelines
) -> None:
    """Full-band speech: the paths differ only in their filters' 7-8 kHz transition band."""
    if speech_wav is None:
        pytest.skip("espeak-ng is not installed")
    from_dali = dali_pipes.load_audio(speech_wav, 16000).numpy()
    from_fallback = fallback_pipes.load_audio(speech_wav, 16000).numpy()
    assert from_dali.shape == from_fallback.shape
    error = rms((from_dali - from_fallback)[EDGE:-EDGE])
    control = control_disagreement(speech_wav, from_fallback)
    assert error <= 2 * control, f"DALI vs fallback {error:.2e}, control {control:.2e}"


@needs_dali
def test_dali_audio_errors_are_input_errors(
    tmp_path: Path, dali_pipes: InputPipelines
) -> None:
    good = write_audio(tmp_path / "good.wav", band_limited(16000, 1.0), 16000)
    torn = tmp_path / "torn.wav"
    torn.write_bytes(good.read_bytes()[:20])  # RIFF/WAVE magic: goes to DALI's decoder
    with pytest.raises(InputError, match="cannot decode .*torn.wav with DALI: .*fmt"):
        dali_pipes.load_audio(torn)
    assert dali_pipes.load_audio(good).shape == (16000,)  # a failed run does not break the next one
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
