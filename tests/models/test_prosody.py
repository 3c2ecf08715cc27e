"""The prosody row: pitch in semitones from the voiced median, voicing and loudness per frame."""

import dataclasses
import math

import pytest
import torch

from emo_rt.models.audio import AudioEncoder, AudioProjector
from emo_rt.models.prosody import fourier_encode, prosody_row, prosody_values

SR, FPS = 16000, 25


def tone(hz: float, seconds: float, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    # a few harmonics, like a voice: the autocorrelation peak must still land on the fundamental
    return amplitude * sum(torch.sin(2 * math.pi * hz * k * t) / k for k in (1, 2, 3))


def test_pitch_is_semitones_from_the_voiced_median_and_loudness_follows_rms():
    low, high = 180.0, 180.0 * 2 ** (4 / 12)  # four semitones apart
    # 1 s low, 1.04 s high at half amplitude: the median sits on the longer, high half
    wave = torch.cat([tone(low, 1.0), tone(high, 1.04, amplitude=0.25)])
    frames = round(wave.numel() / SR * FPS)
    values = prosody_values(wave[None], frames, SR)[0]  # (F, 3)
    inner_low, inner_high = values[3:22], values[29:48]  # away from the switch and the edges
    # integer autocorrelation lags at 16 kHz: ~0.2 semitone resolution near 200 Hz
    assert inner_high[:, 0].mul(6).abs().max() < 0.25
    assert inner_low[:, 0].mul(6).sub(-4).abs().max() < 0.25
    assert (inner_low[:, 1] > 0.8).all() and (inner_high[:, 1] > 0.8).all()  # periodic: voiced
    ratio = inner_high[:, 2].mean() / inner_low[:, 2].mean()
    assert ratio == pytest.approx(0.5, abs=0.05)


def test_noise_and_silence_are_unvoiced():
    g = torch.Generator().manual_seed(0)
    wave = torch.cat([torch.randn(SR, generator=g) * 0.3, torch.zeros(SR)])
    values = prosody_values(wave[None], 2 * FPS, SR)[0]
    assert (values[:, 0] == 0).all() and (values[:, 1] == 0).all()
    assert values[FPS + 2:, 2].abs().max() == 0  # silence has no loudness
    assert values[2:FPS - 2, 2].mean() > 0.5


def test_items_of_a_batch_are_normalised_separately():
    a, b = tone(150.0, 1.0), tone(300.0, 1.0)
    batch = prosody_values(torch.stack([a, b]), FPS, SR)
    alone = prosody_values(b[None], FPS, SR)
    assert torch.allclose(batch[1], alone[0])
    assert batch[:, 3:-3, 0].abs().max() < 0.05  # a steady tone sits on its own median


def test_fourier_encoding_keeps_the_value_and_fills_the_width():
    values = torch.tensor([[0.3, -0.7, 1.2]])
    encoded = fourier_encode(values, 64)
    assert encoded.shape == (1, 64)
    per_value = 64 // 3  # 21 = value, 10 sines, 10 cosines
    assert torch.allclose(encoded[0, ::per_value][:3], values[0])
    assert encoded[0, 3 * per_value:].abs().max() == 0  # padding


def test_encoder_appends_the_row_only_when_configured(tiny_config):
    audio = dataclasses.replace(tiny_config.audio, prosody=True)
    torch.manual_seed(0)
    plain = AudioEncoder(tiny_config.audio).eval()
    with_row = AudioEncoder(audio).eval()
    with_row.load_state_dict(plain.state_dict())  # the row has no weights
    wave = tone(200.0, 1.0)[None]
    with torch.no_grad():
        a, b = plain(wave, FPS), with_row(wave, FPS)
    assert a.shape[2] == len(tiny_config.audio.feature_layers) == audio.num_feature_rows - 1
    assert torch.equal(b[:, :, :-1], a)
    assert torch.equal(b[:, :, -1:], prosody_row(wave, FPS, SR, audio.hidden_size))
    assert AudioProjector(audio)(b).shape == AudioProjector(tiny_config.audio)(a).shape
