"""EmoPipeline.stream: audio in pieces -> the offline render's frames, each window as soon as its
audio context is in; StreamResampler equals resample_poly over the whole file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from emo_rt.errors import InputError
from emo_rt.io.audio import resample
from emo_rt.io.audio_stream import StreamResampler
from emo_rt.pipeline import AudioChunking, EmoPipeline, RenderSettings, StreamedAudio, load_inputs

SETTINGS = RenderSettings(steps=2, cfg=2.0, seed=3, audio_chunk_seconds=1.0)


def gliding_speech(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """Syllables at 3 Hz whose pitch glides 120 -> 260 Hz: every 1 s chunk has its own voiced median."""
    t = np.arange(round(seconds * rate)) / rate
    pitch = 120 + 140 * t / seconds
    wave = 0.3 * (np.sin(2 * np.pi * 3 * t) > 0) * np.sin(2 * np.pi * np.cumsum(pitch) / rate)
    wave = wave.astype(np.float32)
    return np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave


def pieces(samples: np.ndarray, sizes: list[int]):
    start, k = 0, 0
    while start < len(samples):
        size = sizes[k % len(sizes)]
        yield samples[start:start + size]
        start, k = start + size, k + 1


@pytest.fixture(scope="module")
def pipe(prosody_model_dir):
    return EmoPipeline.from_pretrained(prosody_model_dir)


@pytest.fixture(scope="module")
def inputs(pipe, face_png, tmp_path_factory):
    path = tmp_path_factory.mktemp("glide") / "glide.wav"
    sf.write(path, gliding_speech(2.5, 44100, channels=2), 44100)
    return load_inputs(face_png, path, pipe.config.resolution, pipe.config.fps)


@pytest.fixture(scope="module")
def offline(pipe, inputs):
    return np.concatenate(list(pipe(inputs.reference, inputs.waveform, SETTINGS)))


@pytest.mark.parametrize("overlap", [False, True])
def test_streamed_16k_pieces_give_the_offline_frames(pipe, inputs, offline, overlap):
    settings = RenderSettings(**{**SETTINGS.__dict__, "overlap": overlap})
    streamed = np.concatenate(list(pipe.stream(inputs.reference, pieces(inputs.waveform, [1234, 77, 9000]), settings)))
    assert offline.shape == (63, 128, 128, 3)  # 8 windows, the last one padded
    assert np.array_equal(streamed, offline)


def test_streamed_44k_stereo_is_resampled_to_the_offline_frames(pipe, inputs, offline):
    native = inputs.native_audio  # (S, 2) at 44.1 kHz, as the file holds it
    assert inputs.native_rate == 44100 and native.shape[1] == 2
    streamed = np.concatenate(list(pipe.stream(inputs.reference, pieces(native, [4410, 333]), SETTINGS,
                                               sample_rate=44100)))
    assert np.array_equal(streamed, offline)


def test_the_chunking_is_what_the_stream_reproduces(pipe, inputs):
    """Control: the prosody row takes each chunk's own voiced median, so 1 s chunks are not 30 s ones;
    the stream's features equal the offline features at the same chunk size, frame for frame."""
    wave, total = inputs.waveform, 63
    one_second = pipe.audio_features(wave, total, chunk_seconds=1.0)
    whole = pipe.audio_features(wave, total, chunk_seconds=30.0)
    assert not np.array_equal(one_second.numpy(), whole.numpy())
    audio = StreamedAudio(pipe, pieces(wave, [500]), SETTINGS, "cpu")
    span = audio.frames(0, total, lambda: False)
    assert span.first == 0 and span.total == total
    assert np.array_equal(span.features.numpy(), one_second.numpy())


def test_a_window_waits_for_its_audio_context_and_no_longer(pipe, inputs):
    """Window k (frames 8k..8k+7) needs features up to frame 8k+9 (m = 2): the 1 s chunk holding it
    plus that chunk's 1 s right context, 2 s of audio for window 0, and is yielded before more is read."""
    piece = 800
    received = []
    stream_pieces = pieces(inputs.waveform, [piece])

    def counted():
        for p in stream_pieces:
            received.append(len(p))
            yield p

    settings = RenderSettings(**{**SETTINGS.__dict__, "overlap": False})
    chunking = AudioChunking.of(pipe.config, 1.0)
    seen = []
    for frames in pipe.stream(inputs.reference, counted(), settings):
        seen.append((len(frames), sum(received)))
    total = inputs.waveform.size
    f, m = pipe.config.num_frames, 2
    for k, (count, had) in enumerate(seen):
        last_needed = k * f + f + m - 1  # the last frame whose features the window's tokens read
        chunk_start = last_needed // chunking.frames * chunking.frames
        needed = min(total, chunking.samples_for(chunk_start))
        assert needed <= had < needed + piece or (needed == total and had == total), (k, had, needed)
    assert seen[0][1] == 32000  # 2 s at 16 kHz: window 0 was yielded with 0.5 s of the 2.5 s still to come
    assert sum(count for count, _ in seen) == 63


def test_a_long_stream_holds_a_few_chunks(pipe):
    """60 s of audio in 1 s chunks: the features of frames no window needs any more are let go and
    the sample buffer stays within a chunk plus its context, while every span equals the offline one."""
    wave = gliding_speech(60.0, 16000)
    whole = pipe.audio_features(wave, 1500, chunk_seconds=1.0).numpy()
    audio = StreamedAudio(pipe, pieces(wave, [3000]), SETTINGS, "cpu")
    most_parts = most_samples = 0
    for start in range(0, 1500, 8):
        span = audio.frames(max(0, start - 2), start + 10, lambda: False)
        held = span.features.shape[1]
        assert np.array_equal(span.features.numpy(), whole[:, span.first:span.first + held])
        most_parts, most_samples = max(most_parts, len(audio._parts)), max(most_samples, audio._samples.size)
    assert most_parts <= 2
    assert most_samples <= 16000 * 3 + 3000  # 1 s chunk + 1 s context each side + one piece


def test_a_stream_cancelled_while_waiting_for_audio_stops(pipe):
    audio = StreamedAudio(pipe, pieces(gliding_speech(3.0, 16000), [1000]), SETTINGS, "cpu")
    assert audio.frames(0, 10, lambda: True) is None
    assert audio.received == 0


def test_an_empty_stream_and_bad_pieces_are_refused(pipe, inputs):
    with pytest.raises(InputError, match="ended without a single sample"):
        list(pipe.stream(inputs.reference, iter([]), SETTINGS))
    with pytest.raises(InputError, match="NaN or infinite"):
        list(pipe.stream(inputs.reference, iter([np.full(40000, np.nan, np.float32)]), SETTINGS))
    with pytest.raises(InputError, match=r"\(samples,\) or \(samples, channels\)"):
        list(pipe.stream(inputs.reference, iter([np.zeros((2, 2, 2), np.float32)]), SETTINGS))


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000])
def test_stream_resampler_equals_resample_poly_of_the_whole_file(rate):
    x = (np.random.default_rng(rate).standard_normal(rate * 2 + 37) * 0.1).astype(np.float32)
    whole = resample(x, rate, 16000)
    for sizes in ([1, 7, 100, 5000], [rate // 3]):
        resampler = StreamResampler(rate, 16000)
        out = [resampler.push(p) for p in pieces(x, sizes)] + [resampler.flush()]
        assert np.array_equal(np.concatenate(out), whole), sizes
