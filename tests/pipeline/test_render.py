"""Render pipeline: frame counts, muxed audio, chaining of windows, call counts, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from emo_rt.io.preview import GAP
from emo_rt.io.video import read_video
from emo_rt.pipeline import EmoPipeline, RenderSettings, load_inputs, render
from emo_rt.runtime.components import TorchComponents
from emo_rt.schedulers import noise_schedule

FAST = RenderSettings(steps=2, cfg=2.0, seed=3)


class CountingComponents(TorchComponents):
    """TorchComponents that records how often each stage runs and what motion latents it saw."""

    def __init__(self, model, zero_motion_after_first=False):
        super().__init__(model)
        self.calls: dict[str, int] = {}
        self.motion_inputs: list[torch.Tensor] = []
        self.final_latents: list[torch.Tensor] = []
        self.zero_motion_after_first = zero_motion_after_first

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def encode_audio(self, waveform, num_frames):
        self._count("encode_audio")
        return super().encode_audio(waveform, num_frames)

    def reference_features(self, latents):
        self._count("reference_features")
        return super().reference_features(latents)

    def motion_features(self, latents):
        self._count("motion_features")
        if self.zero_motion_after_first and self.calls["motion_features"] > 1:
            latents = torch.zeros_like(latents)
        self.motion_inputs.append(latents.clone())
        return super().motion_features(latents)

    def locate_face(self, mask):
        self._count("locate_face")
        return super().locate_face(mask)

    def denoise(self, *args):
        self._count("denoise")
        return super().denoise(*args)

    def decode_latents(self, latents):
        self._count("decode_latents")
        self.final_latents.append(latents.clone())
        return super().decode_latents(latents)


@pytest.fixture(scope="module")
def model(model_dir):
    from emo_rt.models import EmoModel

    return EmoModel.from_pretrained(model_dir)


def run_frames(components, inputs, settings=FAST):
    pipe = EmoPipeline(components, noise_schedule(None))
    return np.concatenate(list(pipe(inputs.reference, inputs.waveform, settings)))


@pytest.fixture(scope="module")
def inputs(portrait, speech_1s, model):
    return load_inputs(portrait, speech_1s, model.config.resolution, model.config.fps)


def test_render_writes_exact_frames_and_muxed_audio(model_dir, portrait, speech_3s3, tmp_path):
    out = tmp_path / "out.mp4"
    pipe = EmoPipeline.from_pretrained(model_dir)
    stats = render(portrait, speech_3s3, out, pipe, RenderSettings(steps=1, cfg=1.0), preview=tmp_path / "sheet.png",
                   show_progress=False)
    frames, info = read_video(out)
    assert stats.frames == frames.shape[0] == math.ceil(3.3 * 25) == 83
    assert frames.shape[1:] == (128, 128, 3)
    assert info.audio_codec == "aac" and info.video_codec == "h264"
    assert abs(info.audio_duration - info.video_duration) <= 1 / 25
    # the first window reaches the writer before the render ends: 83 frames are 11 windows
    assert 0 < stats.first_frames_seconds < stats.wall_seconds
    assert f"first frames after {stats.first_frames_seconds:.2f} s" in stats.line()
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape[1] == GAP + 7 * (128 + GAP)  # reference + 12 frames in rows of 7
    x, y = GAP, GAP + 14 + GAP  # the first tile, under the title line, is the input crop
    ref = load_inputs(portrait, speech_3s3, 128, 25).reference.pixels  # the model's crop, DALI's or Pillow's
    assert np.array_equal(sheet[y:y + 128, x:x + 128], ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "sheet.png"]  # no temp files left


def test_stages_run_once_per_render_window_and_file(model, inputs):
    comp = CountingComponents(model)
    frames = run_frames(comp, inputs)
    windows = math.ceil(25 / model.config.num_frames)
    assert frames.shape[0] == 25
    assert comp.calls == {"encode_audio": 1, "reference_features": 1, "locate_face": 1,
                          "motion_features": windows, "denoise": windows * FAST.steps,
                          "decode_latents": windows}


def test_windows_are_chained_through_motion_frames(model, inputs):
    n = model.config.num_motion_frames
    chained = CountingComponents(model)
    frames = run_frames(chained, inputs)
    assert torch.count_nonzero(chained.motion_inputs[0]) == 0  # the first window: zero maps
    # window k+1's motion frames are exactly window k's last n generated latents
    for k in range(1, len(chained.motion_inputs)):
        previous = chained.final_latents[k - 1]  # (f, 4, h, w)
        assert torch.equal(chained.motion_inputs[k][0], previous[-n:])
    # and they matter: cutting the chain changes window 2 onwards, not window 1
    unchained = CountingComponents(model, zero_motion_after_first=True)
    cut = run_frames(unchained, inputs)
    f = model.config.num_frames
    assert np.array_equal(cut[:f], frames[:f])
    assert np.abs(cut[f:2 * f].astype(int) - frames[f:2 * f]).max() > 0


def test_same_seed_same_frames(model, inputs):
    a = run_frames(TorchComponents(model), inputs)
    b = run_frames(TorchComponents(model), inputs)
    c = run_frames(TorchComponents(model), inputs, RenderSettings(steps=2, cfg=2.0, seed=4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_window_tokens_equal_whole_file_tokens(model, inputs):
    pipe = EmoPipeline(TorchComponents(model), noise_schedule(None))
    features = torch.randn(1, 30, 2, 64)
    speeds = torch.rand(1, 30) * 3
    whole_audio = pipe.components.project_audio(features)
    whole_speed = pipe.components.encode_speed(speeds)
    f = model.config.num_frames
    for start in (0, 8, 22):  # the last window runs past the end (padded)
        audio, speed = pipe.window_tokens(features, speeds, start)
        keep = min(f, 30 - start)
        torch.testing.assert_close(audio[:, :keep], whole_audio[:, start:start + keep], rtol=0, atol=1e-6)
        torch.testing.assert_close(speed[:, :keep], whole_speed[:, start:start + keep], rtol=0, atol=1e-6)


def test_chunked_audio_features_cover_every_frame(model):
    pipe = EmoPipeline(TorchComponents(model), noise_schedule(None))
    wave = np.random.default_rng(0).standard_normal(16000 * 5).astype(np.float32) * 0.1
    whole = pipe.audio_features(wave, 125, chunk_seconds=30)
    chunked = pipe.audio_features(wave, 125, chunk_seconds=1.2)
    bare = pipe.audio_features(wave, 125, chunk_seconds=1.2, context_seconds=0)
    assert whole.shape == chunked.shape == bare.shape == (1, 125, 2, 64)
    # control: chunks without context; the 1 s of context on each side must bring the chunked
    # features closer to the one-pass features than that
    assert (chunked - whole).abs().mean() < (bare - whole).abs().mean()


def test_interrupt_leaves_no_output(model_dir, portrait, speech_1s, tmp_path, monkeypatch):
    out = tmp_path / "out.mp4"
    pipe = EmoPipeline.from_pretrained(model_dir)
    calls = {"n": 0}
    real = pipe.components.denoise

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(pipe.components, "denoise", interrupted)
    with pytest.raises(KeyboardInterrupt):
        render(portrait, speech_1s, out, pipe, RenderSettings(steps=2, cfg=1.0), show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_start_from_the_noised_reference(model, inputs):
    """start="reference": every window's first Backbone input is the reference's latents noised to
    the first timestep with that window's noise (sqrt(a) ref + sqrt(1 - a) noise), not the noise alone."""
    from emo_rt.pipeline import first_latents
    from emo_rt.schedulers import make_scheduler

    class FirstInputs(TorchComponents):
        def __init__(self, model):
            super().__init__(model)
            self.seen: list[torch.Tensor] = []

        def denoise(self, noisy_latents, timestep, *cond):
            self.seen.append(noisy_latents[:1].clone())
            return super().denoise(noisy_latents, timestep, *cond)

    steps = 2
    settings = RenderSettings(steps=steps, cfg=1.0, seed=3, start="reference", overlap=False)
    comp = FirstInputs(model)
    pipe = EmoPipeline(comp, noise_schedule(None))
    list(pipe.denoised_windows(inputs.reference, inputs.waveform, settings))
    firsts = comp.seen[::steps]
    assert len(firsts) == 4  # 25 frames in windows of 8

    scheduler = make_scheduler("ddim", noise_schedule(None))
    scheduler.set_timesteps(steps)
    alpha = scheduler.alphas_cumprod[scheduler.timesteps[0]]
    reference = pipe.prepare(inputs.reference)["latents"]
    generator = torch.Generator().manual_seed(3)
    c = model.config
    noise = torch.randn(1, c.vae.latent_channels, c.num_frames, c.latent_size, c.latent_size, generator=generator)
    expected = alpha.sqrt() * reference[:, :, None] + (1 - alpha).sqrt() * noise
    assert torch.allclose(firsts[0], expected, atol=1e-5)
    assert torch.allclose(first_latents(scheduler, noise, reference), expected, atol=1e-6)
    assert torch.equal(first_latents(scheduler, noise, None), noise * scheduler.init_noise_sigma)
    for later in firsts[1:]:  # later windows: fresh noise, the same reference term
        assert not torch.allclose(later, firsts[0], atol=1e-3)
        residual = (later - alpha.sqrt() * reference[:, :, None]) / (1 - alpha).sqrt()
        assert 0.8 < float(residual.std()) < 1.2 and abs(float(residual.mean())) < 0.1


def test_unknown_start_is_refused():
    from emo_rt.errors import InputError

    with pytest.raises(InputError, match="start 'image'"):
        RenderSettings(start="image")
