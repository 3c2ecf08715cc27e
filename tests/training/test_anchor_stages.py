"""Training with the anchor (EmoConfig.anchor "residual") and clean-latent prediction: each stage
anchors on the reference, as the render does, noises the frames minus it, and with prediction_type
"sample" its target is exactly those diffused latents."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emo_rt.models import EmoModel
from emo_rt.training.recipe import DenoiseStageRecipe, DiffusionRecipe, Recipe
from emo_rt.training.stages import ClipStage, FrameStage
from tests.training.toy_data import TOY_MODEL_OVERRIDES


class Answers(nn.Module):
    """Stands in for the Backbone (the stage's loss is under test, not the network): records what the
    stage gives it and answers `answer`."""

    def __init__(self, answer: torch.Tensor):
        super().__init__()
        self.answer, self.seen = answer, {}

    def forward(self, noisy, timestep, **conditions):
        self.seen = dict(conditions, noisy=noisy, timestep=timestep)
        return self.answer


def stage_and_batch(number: int, prediction_type: str, anchor: str = "residual", anchor_noise: float = 0.0):
    overrides = dict(TOY_MODEL_OVERRIDES, anchor=anchor)
    section = DenoiseStageRecipe(steps=1, batch_size=2, lr=1e-3, anchor_noise=anchor_noise)
    recipe = Recipe(model="tiny", model_overrides=overrides, diffusion=DiffusionRecipe(prediction_type=prediction_type),
                    stage1=section, stage2=section)
    torch.manual_seed(0)
    model = EmoModel(recipe.model_config()).eval()
    c = model.config
    g = torch.Generator().manual_seed(1)
    lat = lambda *s: torch.randn(*s, c.vae.latent_channels, c.latent_size, c.latent_size, generator=g)  # noqa: E731
    batch = {"reference_latents": lat(2), "face_mask": torch.ones(2, 1, c.resolution, c.resolution),
             "timestep": torch.tensor([300, 800]), "keep_reference": torch.ones(2), "keep_audio": torch.ones(2)}
    if number == 1:
        stage = FrameStage(model, recipe)
        batch["target_latents"] = lat(2)
    else:
        stage = ClipStage(model, recipe, speed=False)
        n, f, m = c.num_motion_frames, c.num_frames, stage.context
        batch.update(frame_latents=lat(2, n + f), zero_motion=torch.tensor([False, False]),
                     audio_features=torch.randn(2, n + f + 2 * m, c.audio.num_feature_rows, c.audio.hidden_size),
                     head_speed=torch.rand(2, n + f + 2 * m))
    batch["noise"] = torch.randn(2, c.vae.latent_channels, stage.num_frames, c.latent_size, c.latent_size, generator=g)
    return stage, batch


@pytest.mark.parametrize("number", [1, 2])
def test_the_stage_anchors_on_the_reference_and_its_sample_target_is_frames_minus_anchor(number):
    stage, batch = stage_and_batch(number, "sample")
    expected = batch["reference_latents"]  # also in stage 2, where the window has motion frames
    diffused = stage.clean_latents(batch) - expected[:, :, None]
    stage.model.backbone = Answers(diffused)
    loss, _ = stage(batch)
    seen = stage.model.backbone.seen
    assert torch.equal(seen["anchor_latents"], expected)
    torch.testing.assert_close(seen["noisy"], stage.scheduler.add_noise(diffused, batch["noise"], batch["timestep"]))
    assert float(loss) == 0.0  # the clean residual is exactly the target


def test_with_v_prediction_the_same_answer_is_not_the_target():
    stage, batch = stage_and_batch(1, "v_prediction")
    diffused = stage.clean_latents(batch) - batch["reference_latents"][:, :, None]
    stage.model.backbone = Answers(diffused)
    assert float(stage(batch)[0]) > 0.1
    stage.model.backbone = Answers(stage.scheduler.get_velocity(diffused, batch["noise"], batch["timestep"]))
    assert float(stage(batch)[0]) < 1e-10


def test_the_motion_anchor_is_the_last_motion_frame_or_the_reference_in_a_first_window():
    """anchor "motion": a window with motion frames anchors on the last of them, a clip's first window
    (zero motion) on the reference, as the render does; the target is the frames minus that anchor."""
    stage, batch = stage_and_batch(2, "sample", anchor="motion")
    n = stage.num_motion_frames
    batch["zero_motion"] = torch.tensor([False, True])
    expected = torch.stack([batch["frame_latents"][0, n - 1], batch["reference_latents"][1]])
    stage.model.backbone = Answers(stage.clean_latents(batch) - expected[:, :, None])
    loss, _ = stage(batch)
    assert torch.equal(stage.model.backbone.seen["anchor_latents"], expected)
    assert float(loss) == 0.0


def test_the_motion_anchor_is_noised_by_what_the_stage_drew_and_only_in_that_design():
    """The drawn anchor noise (sigma ~ U(0, anchor_noise)) is added to the anchor the Backbone sees and
    subtracted from the target: it learns to correct an anchor that is off, as a render's own frame is.
    The reference-anchored design draws nothing more (its random stream is unchanged)."""
    stage, batch = stage_and_batch(2, "sample", anchor="motion", anchor_noise=0.5)
    draws = [stage.draw(torch.Generator().manual_seed(k)) for k in range(200)]
    sigmas = torch.stack([d["anchor_noise"].std() for d in draws])
    assert 0 < float(sigmas.min()) and float(sigmas.max()) <= 0.5 * 1.2 and 0.2 < float(sigmas.mean()) < 0.3
    batch["anchor_noise"] = torch.stack([draws[0]["anchor_noise"], draws[1]["anchor_noise"]])
    n = stage.num_motion_frames
    expected = batch["frame_latents"][:, n - 1] + batch["anchor_noise"]
    stage.model.backbone = Answers(stage.clean_latents(batch) - expected[:, :, None])
    assert float(stage(batch)[0]) == 0.0
    assert torch.equal(stage.model.backbone.seen["anchor_latents"], expected)
    residual, _ = stage_and_batch(2, "sample")
    assert "anchor_noise" not in residual.draw(torch.Generator().manual_seed(0))


def test_the_motion_anchor_is_blurred_by_the_drawn_share():
    """anchor_blur a: the anchor mixed toward its 3x3 blur in latent space (what a render's over-smooth
    frames look like), a = 1 the blur itself, a = 0 the frame untouched."""
    stage, batch = stage_and_batch(2, "sample", anchor="motion")
    n = stage.num_motion_frames
    batch["anchor_blur"] = torch.tensor([1.0, 0.0])
    last = batch["frame_latents"][:, n - 1]
    blurred = torch.nn.functional.avg_pool2d(last, 3, 1, 1, count_include_pad=False)
    anchor = stage.anchor(batch)
    torch.testing.assert_close(anchor[0], blurred[0])
    assert torch.equal(anchor[1], last[1]) and not torch.allclose(anchor[0], last[0])
    drawn = stage_and_batch(2, "sample", anchor="motion")[0]
    drawn.stage_recipe = DenoiseStageRecipe(steps=1, batch_size=2, lr=1e-3, anchor_blur=0.5)
    shares = torch.stack([drawn.draw(torch.Generator().manual_seed(k))["anchor_blur"] for k in range(100)])
    assert 0 <= float(shares.min()) and float(shares.max()) <= 0.5 and float(shares.std()) > 0.05
