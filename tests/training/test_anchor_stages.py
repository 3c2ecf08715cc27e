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


def stage_and_batch(number: int, prediction_type: str):
    overrides = dict(TOY_MODEL_OVERRIDES, anchor="residual")
    section = DenoiseStageRecipe(steps=1, batch_size=2, lr=1e-3)
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
