"""emo_rt.io.audio: every format decodes, rates/channels -> mono 16 kHz, bad files -> InputError."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from io_helpers import tone

from emo_rt.errors import InputError
from emo_rt.io.audio import decode_audio, is_silent, load_audio, num_video_frames


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[np.argmax(spectrum)])


FORMATS = ["clip.wav", "clip.flac", "clip.ogg", "clip.opus.ogg", "clip.mp3", "clip.m4a"]


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_decodes_to_mono_16k(make_audio, name: str) -> None:
    rate = 48000 if name.endswith(".opus.ogg") else 44100  # opus only codes 48 kHz
    path = make_audio(name, tone(rate, 2.0, (440.0, 440.0)), rate)  # stereo, 2 s
    samples = load_audio(path, 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    # exact for lossy codecs too: encoder delay and end padding are trimmed (container metadata)
    assert samples.size == 32000
    assert peak_frequency(samples, 16000) == pytest.approx(440.0, abs=1.0)
    assert np.abs(samples).max() == pytest.approx(0.3, abs=0.05)


def test_stereo_44k_becomes_mono_16k_with_exact_duration(make_audio) -> None:
    stereo = tone(44100, 2.5, (440.0, 1000.0))  # left 440 Hz, right 1 kHz
    samples = load_audio(make_audio("stereo.wav", stereo, 44100), 16000)
    assert samples.shape == (40000,)  # 2.5 s * 16 kHz
    spectrum = np.abs(np.fft.rfft(samples[4000:-4000]))
    freqs = np.fft.rfftfreq(samples[4000:-4000].size, 1 / 16000)
    top_two = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert top_two == pytest.approx([440.0, 1000.0], abs=1.0)  # both channels kept, averaged
    assert np.abs(samples).max() == pytest.approx(0.3, abs=0.02)  # mean of two 0.3 sines


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 32000, 44100, 48000, 96000])
def test_sine_frequency_and_level_survive_resampling(make_audio, rate: int) -> None:
    freq = 3000.0 if rate > 8000 else 1234.0
    samples = load_audio(make_audio(f"tone{rate}.wav", tone(rate, 1.0, (freq,)), rate), 16000)
    assert samples.size == 16000
    assert peak_frequency(samples, 16000) == pytest.approx(freq, abs=1.0)
    interior = samples[800:-800]  # away from the filter's edge transients
    assert np.sqrt(np.mean(interior**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.01)


def test_content_above_the_new_nyquist_is_removed_not_aliased(make_audio) -> None:
    # 10 kHz at 44.1 kHz would alias to 6 kHz at 16 kHz without the anti-aliasing filter
    samples = load_audio(make_audio("high.wav", tone(44100, 1.0, (10000.0,)), 44100), 16000)
    assert np.sqrt(np.mean(samples[800:-800] ** 2)) < 1e-3


def test_native_rate_is_reported_by_decode_audio(make_audio) -> None:
    samples, rate = decode_audio(make_audio("native.flac", tone(22050, 0.5, (440.0, 440.0)), 22050))
    assert rate == 22050 and samples.shape == (11025,)


def test_real_speech_decodes(speech_wav: Path | None) -> None:
    if speech_wav is None:
        pytest.skip("espeak-ng is not installed")
    samples = load_audio(speech_wav, 16000)
    assert samples.size > 16000 and not is_silent(samples)


# --- bad input ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="audio file not found: .*nope.wav"):
        load_audio(tmp_path / "nope.wav")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        load_audio(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty \(0 bytes\)"):
        load_audio(tmp_path / "empty.wav")


def test_text_file_renamed_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are my lecture notes, not audio\n" * 20)
    with pytest.raises(InputError, match="not an audio file"):
        load_audio(path)


def test_random_bytes_renamed_mp3(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="not an audio file"):
        load_audio(path)


def test_corrupt_wav_header(make_audio, tmp_path: Path) -> None:
    good = make_audio("good.wav", tone(16000, 1.0), 16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(good.read_bytes()[:20])  # RIFF/WAVE magic, torn 'fmt ' chunk
    with pytest.raises(InputError, match="corrupt"):
        load_audio(broken)


def test_image_renamed_wav_has_no_audio_stream(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "photo.wav"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(path, format="PNG")
    with pytest.raises(InputError, match="no audio stream"):
        load_audio(path)


def test_zero_length_audio(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000)  # valid header, no samples
    with pytest.raises(InputError, match="zero length"):
        load_audio(path)


def test_shorter_than_one_frame(make_audio) -> None:
    short = make_audio("short.wav", tone(16000, 0.02), 16000)  # 20 ms < 40 ms (one frame at 25 fps)
    with pytest.raises(InputError, match=r"too short: .* lasts 0\.020 s, at least 0\.040 s"):
        load_audio(short, min_seconds=1 / 25)
    one_frame = make_audio("one.wav", tone(16000, 0.04), 16000)
    assert load_audio(one_frame, min_seconds=1 / 25).size == 640


# --- frame counts and silence -------------------------------------------------------------------


def test_frame_count_is_ceil_of_duration_times_fps() -> None:
    assert num_video_frames(52800, 16000, 25) == 83  # 3.3 s -> ceil(82.5)
    assert num_video_frames(48000, 16000, 25) == 75  # exactly 3 s: no extra frame
    assert num_video_frames(48001, 16000, 25) == 76  # one sample more needs one frame more
    assert num_video_frames(1, 16000, 25) == 1
    assert num_video_frames(160000, 16000, 29.97) == 300  # 10 s * 29.97 = 299.7
    assert num_video_frames(160000, 16000, Fraction(30000, 1001)) == 300


def test_frame_count_has_no_float_drift() -> None:
    rng = np.random.default_rng(0)
    for num_samples, rate, fps in zip(
        rng.integers(1, 10**8, 500), rng.choice([8000, 16000, 22050, 44100, 48000], 500),
        rng.choice([24, 25, 30, 50, 60], 500), strict=True,
    ):
        exact = Fraction(int(num_samples) * int(fps), int(rate))
        expected = exact.numerator // exact.denominator + (exact.denominator != 1)
        assert num_video_frames(int(num_samples), int(rate), int(fps)) == expected
    # where float maths goes wrong: 0.7 s at 100 fps is 70 frames, not ceil(70.00000000000001)
    assert num_video_frames(11200, 16000, 100) == 70


def test_is_silent() -> None:
    assert is_silent(np.zeros(16000, np.float32))
    assert is_silent(np.full(16000, 1e-5, np.float32))  # -100 dBFS hum
    assert not is_silent(tone(16000, 1.0)[:, 0])
    assert is_silent(np.zeros(0, np.float32))
