"""Stage 4 (training/distill.py): the student's grid nests in the teacher's, its DDIM step is the
render's, the loss falls on a fixed batch, and a finished stage renders with its own few steps."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from emo_rt.models import EmoModel
from emo_rt.pipeline import model_render_settings
from emo_rt.schedulers import noise_schedule
from emo_rt.training.distill import trailing_timesteps
from emo_rt.training.distributed import Distributed
from emo_rt.training.initial import initial_model
from emo_rt.training.loop import Trainer
from emo_rt.training.plan import plan, stage_paths
from emo_rt.training.stage_data import SampleStream, collate
from emo_rt.training.stages import build_stage
from emo_rt.training.trainer import train
from tests.training.toy_data import toy_recipe, write_recipe


def test_the_student_grid_is_every_mth_teacher_step_and_matches_the_renderers():
    for teacher, student in ((8, 2), (8, 4), (4, 1), (6, 3)):
        grid = trailing_timesteps(teacher, 1000)
        assert torch.equal(grid[::teacher // student], trailing_timesteps(student, 1000))
        render = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
        render.set_timesteps(student)
        assert torch.equal(render.timesteps, trailing_timesteps(student, 1000))
    assert trailing_timesteps(8, 1000).tolist() == [999, 874, 749, 624, 499, 374, 249, 124]


@pytest.fixture(scope="module")
def stage4(toy):
    checked = plan(toy["recipe"], 4, toy["data"], toy["run"], resume=True)
    model = initial_model(checked, say=lambda m: None)
    teacher = EmoModel.from_pretrained(checked.start_model).backbone
    stage = build_stage(4, model, checked.recipe, teacher=teacher)
    samples, _ = Trainer(checked, Distributed(), progress=False).samples(model, stage)
    batch = collate([samples[k] for k in SampleStream(len(samples), 0, 2).keys(0, 0)])
    return stage, batch


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_ddim_step_is_the_render_schedulers_step(stage4, kind):
    """The stage's per-sample DDIM update equals diffusers' DDIMScheduler.step on the model's own
    schedule with trailing spacing, for an intermediate and the final step, whatever the network predicts."""
    stage, _ = stage4
    trained = stage.scheduler
    stage.scheduler = DDPMScheduler.from_config(trained.config, prediction_type=kind)
    try:
        check_ddim_step(stage)
    finally:
        stage.scheduler = trained


def check_ddim_step(stage):
    render = DDIMScheduler.from_config(stage.scheduler.config)
    render.set_timesteps(stage.student_steps)
    g = torch.Generator().manual_seed(0)
    x, prediction = torch.randn(2, 4, 2, 8, 8, generator=g), torch.randn(2, 4, 2, 8, 8, generator=g)
    for t in render.timesteps:
        expected = render.step(prediction, t, x).prev_sample
        t_batch = t.repeat(2)
        got = stage.ddim_step(prediction, x, t_batch, stage._prev(t_batch, stage.per_step))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_the_student_starts_where_the_render_starts(stage4):
    """Student step 0's input is the reference's latents noised to the first timestep (the render's
    default start); later steps noise the clip's own latents."""
    stage, batch = stage4
    b = batch["noise"].shape[0]
    x, t = stage.start_latents(batch, torch.zeros(b, dtype=torch.long))
    assert (t == 999).all()
    reference = batch["reference_latents"][:, :, None].expand_as(x)
    torch.testing.assert_close(x, stage.scheduler.add_noise(reference, batch["noise"], t))
    x1, t1 = stage.start_latents(batch, torch.ones(b, dtype=torch.long))
    torch.testing.assert_close(x1, stage.scheduler.add_noise(stage.clean_latents(batch), batch["noise"], t1))


def test_distillation_loss_goes_down_on_a_fixed_batch(stage4):
    stage, batch = stage4
    params = [p for n, p in stage.model.named_parameters() if n.startswith("backbone.")]
    for p in stage.model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=3e-4)
    losses = []
    for _ in range(20):
        loss, _ = stage(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.6 * losses[0], losses
    teacher = dict(stage.teacher.named_parameters())
    assert all(not p.requires_grad for p in teacher.values())  # the teacher never trains


def test_a_finished_stage4_renders_with_its_own_steps_and_a_resume_keeps_the_teacher(toy, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", toy_recipe(steps=2))
    run = tmp_path / "run"
    import shutil

    shutil.copytree(stage_paths(toy["run"], 3).root, stage_paths(run, 3).root)
    out = train(recipe, 4, toy["data"], run, progress=False)
    settings = model_render_settings(out)
    assert (settings.steps, settings.cfg, settings.scheduler, settings.start) == (2, 1.0, "ddim", "reference")
    assert noise_schedule(out)["timestep_spacing"] == "trailing"
    trained = json.loads((out / "training.json").read_text())["trained_parameters"]
    assert trained and all(name.startswith("backbone.") for name in trained)
    # resumed from its checkpoint, the stage's teacher is still the stage-3 model, not the student
    resumed = plan(recipe, 4, toy["data"], run, resume=True)
    teacher = EmoModel.from_pretrained(resumed.start_model).backbone.state_dict()
    stage3 = EmoModel.from_pretrained(stage_paths(run, 3).model).backbone.state_dict()
    assert all(torch.equal(teacher[k], stage3[k]) for k in teacher)
    student = EmoModel.from_pretrained(out).backbone.state_dict()
    assert any(not torch.equal(student[k], stage3[k]) for k in student)
