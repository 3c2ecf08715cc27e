"""The render loop's anchor (EmoConfig.anchor): the reference's latents in every window, with or without
guidance; with residual diffusion the frames are what was denoised plus the anchor."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emo_rt.models import EmoModel
from emo_rt.pipeline import EmoPipeline, RenderSettings, load_inputs
from emo_rt.runtime.components import TorchComponents
from emo_rt.schedulers import noise_schedule


class SeenAnchors(TorchComponents):
    def __init__(self, model):
        super().__init__(model)
        self.anchors: list[torch.Tensor] = []

    def denoise(self, noisy_latents, timestep, *cond):
        self.anchors.append(cond[-1].clone())  # anchor_latents: the last conditioning input
        return super().denoise(noisy_latents, timestep, *cond)


@pytest.fixture(scope="module")
def anchored(model_dir):
    torch.manual_seed(0)
    return EmoModel(dataclasses.replace(EmoModel.from_pretrained(model_dir).config, anchor="residual")).eval()


def windows(model, portrait, speech, steps, cfg=1.0, batch_guidance=True):
    inputs = load_inputs(portrait, speech, model.config.resolution, model.config.fps)
    comp = SeenAnchors(model)
    pipe = EmoPipeline(comp, noise_schedule(None))
    settings = RenderSettings(steps=steps, cfg=cfg, seed=5, start="noise", overlap=False,
                              batch_guidance=batch_guidance)
    drawn = list(pipe.denoised_windows(inputs.reference, inputs.waveform, settings))
    return drawn, comp.anchors, pipe.prepare(inputs.reference)["latents"]


@pytest.mark.parametrize("cfg, batch_guidance, passes", [(1.0, True, 1), (3.5, True, 1), (3.5, False, 2)])
def test_every_window_and_guidance_half_is_anchored_on_the_reference(anchored, portrait, speech_1s, cfg,
                                                                      batch_guidance, passes):
    steps = 2
    drawn, anchors, reference = windows(anchored, portrait, speech_1s, steps, cfg, batch_guidance)
    assert len(drawn) == 4 and len(anchors) == 4 * steps * passes  # 25 frames in windows of 8
    for anchor in anchors:  # (1 or 2, C, h, w): the guidance pair's halves alike
        assert torch.equal(anchor, reference.expand_as(anchor))


def test_residual_frames_are_the_denoised_latents_plus_the_anchor(anchored, portrait, speech_1s):
    """The first window's frames minus the reference's latents are exactly what the sampler left after
    its last step: the same render with from_diffused skipped (anchor "none" for the sum only)."""
    import emo_rt.pipeline as pipeline

    drawn, _, reference = windows(anchored, portrait, speech_1s, steps=2)
    real = pipeline.from_diffused
    try:
        pipeline.from_diffused = lambda z, anchor, mode: z
        denoised, _, _ = windows(anchored, portrait, speech_1s, steps=2)
    finally:
        pipeline.from_diffused = real
    torch.testing.assert_close(drawn[0] - denoised[0], reference.expand_as(drawn[0]),
                               atol=1e-5, rtol=0)  # a float32 add on values of a few units


def test_a_backbone_that_predicts_no_change_renders_the_reference_still(model_dir, portrait, speech_1s):
    """Clean-latent prediction with the residual anchor: a Backbone whose output is zero predicts "the
    frame is the anchor", so every window repeats the reference. What is left is DDIM's noise: with x0 = 0
    each step scales the latents by sqrt((1 - a_prev) / (1 - a_t)), so a window ends at
    sqrt(1 - a_final) / sqrt(1 - a_first) of its unit noise (0.030), the same in every window: nothing
    carries over from one window to the next. Without the anchor the same model draws zeros, as far from
    the reference as the reference's spread."""
    from emo_rt.schedulers import make_scheduler

    schedule = dict(noise_schedule(None), prediction_type="sample")
    steps, drawn = 4, {}
    for mode in ("none", "residual"):
        torch.manual_seed(0)
        model = EmoModel(dataclasses.replace(EmoModel.from_pretrained(model_dir).config, anchor=mode)).eval()
        torch.nn.init.zeros_(model.backbone.conv_out.weight)
        torch.nn.init.zeros_(model.backbone.conv_out.bias)
        inputs = load_inputs(portrait, speech_1s, model.config.resolution, model.config.fps)
        pipe = EmoPipeline(TorchComponents(model), schedule)
        settings = RenderSettings(steps=steps, cfg=1.0, seed=5, start="noise", overlap=False)
        drawn[mode] = torch.cat(list(pipe.denoised_windows(inputs.reference, inputs.waveform, settings)))
        reference = pipe.prepare(inputs.reference)["latents"]
    scheduler = make_scheduler("ddim", schedule)
    scheduler.set_timesteps(steps)
    a_first, a_final = scheduler.alphas_cumprod[scheduler.timesteps[0]], scheduler.final_alpha_cumprod
    per_window = float((1 - a_final).sqrt() / (1 - a_first).sqrt())

    def rms(x):
        return float(x.square().mean().sqrt())

    f = model.config.num_frames
    assert drawn["residual"].shape[0] == 25
    for k in range(4):  # the RMS of 8 x 16 x 16 x 16 draws: within 5% (its sampling error is 0.4%)
        off = rms(drawn["residual"][f * k: f * k + f] - reference)
        assert off == pytest.approx(per_window, rel=0.05)
    assert rms(drawn["none"] - reference) > 0.9 * rms(reference) > 3 * per_window
