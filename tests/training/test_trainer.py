"""Trainer at toy scale: recipe validation, what each stage trains, overfitting a fixed batch, logs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import emo_rt.training
from emo_rt.errors import EmoError
from emo_rt.models import EmoModel
from emo_rt.schedulers import noise_schedule
from emo_rt.training.distributed import Distributed
from emo_rt.training.initial import initial_model
from emo_rt.training.loop import Trainer
from emo_rt.training.plan import plan, stage_paths
from emo_rt.training.recipe import LossRecipe, RecipeError, load_recipe
from emo_rt.training.stage_data import SampleStream, collate
from emo_rt.training.stages import build_stage, loss_weight_map, stage_parameter_names
from emo_rt.training.trainable import apply_gradient_checkpointing
from emo_rt.training.trainer import train
from tests.training.toy_data import toy_recipe, write_recipe

QUIET = lambda message: None  # noqa: E731


def _one_line(err: Exception) -> str:
    text = str(err)
    assert text and "\n" not in text, f"not one line: {text!r}"
    return text


# ---- recipes -----------------------------------------------------------------------------------
RECIPES = Path(emo_rt.training.__file__).parent / "recipes"


def test_shipped_recipes_load():
    for name in ("tiny", "sd15"):
        recipe = load_recipe(RECIPES / f"{name}.yaml")
        assert recipe.model == name
        assert recipe.stage1 is not None and recipe.stage2 is not None and recipe.stage3 is not None
    assert load_recipe(RECIPES / "tiny.yaml").stage0 is not None


@pytest.mark.parametrize("change, expected", [
    (lambda r: r["stage1"].update(lrr=1e-4), "unknown key 'stage1.lrr'"),
    (lambda r: r["stage1"].update(steps="ten"), "stage1.steps: expected an integer, got str 'ten'"),
    (lambda r: r["stage2"].update(lr=True), "stage2.lr: expected a number"),
    (lambda r: r["stage1"].pop("lr"), "missing key 'stage1.lr'"),
    (lambda r: r["diffusion"].update(prediction_type="x0"), "prediction_type must be one of"),
    (lambda r: r["model_overrides"].update(resolutoin=64), "model_overrides: unknown key 'resolutoin'"),
    (lambda r: r["stage0"].update(betas=[0.9]), "stage0.betas: expected a list of 2 values"),
    (lambda r: r.update(loss={"brow_weight": -1.0}), "loss: brow_weight must be"),
    (lambda r: r["stage2"].update(train_backbone=True), "unknown key 'stage2.train_backbone'"),
])
def test_bad_recipe_is_one_clear_line(tmp_path, change, expected):
    data = toy_recipe()
    change(data)
    path = write_recipe(tmp_path / "bad.yaml", data)
    with pytest.raises(RecipeError) as err:
        train(path, 1, tmp_path / "data", tmp_path / "run", progress=False)
    assert expected in _one_line(err.value)
    assert str(path) in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing was done


def test_recipe_that_is_not_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stage1: {steps: 3\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "not valid YAML" in _one_line(err.value)


def test_missing_data_dir_and_missing_previous_stage(tmp_path, toy):
    recipe = write_recipe(tmp_path / "r.yaml", toy_recipe())
    with pytest.raises(EmoError) as err:
        train(recipe, 1, tmp_path / "nowhere", tmp_path / "run", progress=False)
    assert "data directory" in _one_line(err.value) and "not found" in str(err.value)
    with pytest.raises(EmoError) as err:
        train(recipe, 2, toy["data"], tmp_path / "run", progress=False)
    assert "stage 2 starts from stage 1's output" in _one_line(err.value)
    with pytest.raises(EmoError) as err:  # checkpoints exist: refuse to overwrite without --resume
        train(toy["recipe"], 1, toy["data"], toy["run"], progress=False)
    assert "--resume" in _one_line(err.value)
    assert not (tmp_path / "run").exists()


def test_command_line_prints_one_error_line(tmp_path, capsys):
    from emo_rt.cli import main

    data = toy_recipe()
    data["stage1"]["warmup"] = 10
    path = write_recipe(tmp_path / "bad.yaml", data)
    code = main(["train", "--recipe", str(path), "--stage", "1", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emo-rt: error: recipe") and "stage1.warmup" in lines[0]


# ---- what each stage trains ------------------------------------------------------------------
GROUPS = {  # stage -> parameter-name patterns (regular expressions) that must be among the changed ones
    0: [r"^vae\.encoder\.", r"^vae\.decoder\."],
    1: [r"^backbone\.conv_in\.", r"^backbone\..*\.attentions\..*\.attn1\.", r"^backbone\.up_blocks\..*resnets",
        r"^reference_net\.", r"^face_locator\."],
    2: [r"motion_modules\..*\.attn1\.", r"\.audio_attn\.", "norm_audio", r"^audio_projector\."],
    3: [r"motion_modules\..*\.attn1\.", r"\.speed_attn\.", "norm_speed", r"^speed_encoder\."],
}
NEVER = {  # stage -> patterns that must not change
    0: ["backbone.", "reference_net.", "audio_"],
    1: ["motion_modules.", "audio_attn", "norm_audio", "speed_", "vae.", "audio_encoder."],
    2: ["speed_attn", "norm_speed", "speed_encoder", "reference_net.", "vae.", "face_locator.", "audio_encoder.",
        r"\.attentions\.\d+\.transformer_blocks\.0\.(attn1|ff)\.", "resnets", "conv_in"],
    3: ["audio_attn", "norm_audio", "audio_projector", "reference_net.", "vae.", "face_locator.", "audio_encoder.",
        r"\.attentions\.\d+\.transformer_blocks\.0\.(attn1|ff)\.", "resnets", "conv_in"],
}


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_stage_changes_exactly_its_parameters(toy, stage):
    start = initial_model(plan(toy["recipe"], stage, toy["data"], toy["run"], resume=True), say=QUIET)
    output = stage_paths(toy["run"], stage).model
    end = EmoModel.from_pretrained(output)
    trained = set(json.loads((output / "training.json").read_text())["trained_parameters"])
    before, after = start.state_dict(), end.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}

    assert changed <= trained  # every tensor outside the stage's set is bitwise the same
    # and every trained one moved, except zeros with a zero gradient (e.g. norm_speed.bias: with one
    # speed token the speed attention's softmax is constant, so its query side gets no gradient)
    still = trained - changed
    assert all(not before[k].any() for k in still), sorted(still)[:3]
    assert len(still) <= len(trained) // 10
    intended = set(stage_parameter_names(end, stage))
    assert trained <= intended
    # only parameters that cannot reach the loss are left out: the ReferenceNet's layers after its
    # last feature tap (stage 1)
    assert all(name.startswith("reference_net.") for name in intended - trained)
    if stage != 1:
        assert intended == trained
    for pattern in GROUPS[stage]:
        assert any(re.search(pattern, name) for name in changed), f"stage {stage} did not train {pattern}"
    for pattern in NEVER[stage]:
        assert not any(re.search(pattern, name) for name in changed), f"stage {stage} changed {pattern}"


def test_stage1_starts_inert_and_stage0_sets_the_scaling_factor(toy):
    start = initial_model(plan(toy["recipe"], 1, toy["data"], toy["run"], resume=True), say=QUIET)
    for name, param in start.backbone.named_parameters():
        if ".motion_modules." in f".{name}" and ".proj_out." in name or "audio_attn.to_out.0" in name:
            assert not param.any(), name
    stage0 = EmoModel.from_pretrained(stage_paths(toy["run"], 0).model)
    assert stage0.vae.config.scaling_factor == stage0.config.vae.scaling_factor != 1.0
    with torch.no_grad():
        latents = stage0.encode_images(torch.rand(4, 3, 64, 64) * 2 - 1)
    assert 0.3 < float(latents.std()) < 3.0


def test_loss_weights_the_face_box_halves():
    """An 8-row face box in a 16x16 mask: background 1, upper half 1 + face + brow, lower half
    1 + face + mouth."""
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    weight = loss_weight_map(mask, 16, LossRecipe(face_weight=1.0, mouth_weight=3.0, brow_weight=1.5))[0, 0]
    assert weight[0, 0] == 1 and weight[4:8, 4:12].eq(3.5).all() and weight[8:12, 4:12].eq(5).all()
    assert loss_weight_map(mask, 16, LossRecipe())[0, 0, 4:8, 4:12].eq(2).all()  # brow_weight defaults to 0


# ---- overfitting one fixed batch --------------------------------------------------------------
@pytest.mark.parametrize("stage, lr, ratio", [(0, 1e-3, 0.85), (1, 1e-3, 0.4), (2, 3e-3, 0.8), (3, 3e-3, 0.9)])
def test_loss_goes_down_on_a_fixed_batch(toy, stage, lr, ratio, steps=20):
    """Fixed batch (frames, noise, timesteps, dropout all fixed), only the stage's parameters train.
    Measured ratios (mean of the last 5 losses / first): 0.71, 0.23, 0.67, 0.76 (stage 0 starts low:
    the autoencoder's image skip passes the colours from the first step)."""
    checked = plan(toy["recipe"], stage, toy["data"], toy["run"], resume=True)
    model = initial_model(checked, say=QUIET)
    module = build_stage(stage, model, checked.recipe, crop=32 if stage == 0 else 0)
    dataset, _ = Trainer(checked, Distributed(), progress=False).samples(model, module)
    batch = collate([dataset[k] for k in SampleStream(len(dataset), 0, 2).keys(0, 0)])
    names = set(module.parameter_names())
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = module(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = losses[0], sum(losses[-5:]) / 5
    assert last < ratio * first, f"stage {stage}: loss {first:.4f} -> {last:.4f}"


def test_gradient_checkpointing_keeps_loss_gradients_and_keys(toy):
    checked = plan(toy["recipe"], 2, toy["data"], toy["run"], resume=True)
    model = initial_model(checked, say=QUIET)
    module = build_stage(2, model, checked.recipe)
    dataset, _ = Trainer(checked, Distributed(), progress=False).samples(model, module)
    batch = collate([dataset[k] for k in SampleStream(len(dataset), 0, 2).keys(0, 0)])
    names = set(module.parameter_names())
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss, _ = module(batch)
        loss.backward()
        return loss.detach(), {n.replace("_checkpoint_wrapped_module.", ""): p.grad.clone()
                               for n, p in model.named_parameters() if p.grad is not None}

    keys = list(model.backbone.state_dict())
    plain_loss, plain_grads = loss_and_grads()
    apply_gradient_checkpointing(model)
    assert any("_checkpoint_wrapped_module" in n for n, _ in model.named_parameters())
    assert list(model.backbone.state_dict()) == keys  # model directories keep their key names
    loss, grads = loss_and_grads()
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=0)
    assert grads.keys() == plain_grads.keys() and len(grads) > 50
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-5, atol=1e-8, msg=name)


# ---- logs ------------------------------------------------------------------------------------
def test_logs_checkpoints_and_outputs(toy):
    for stage in range(4):
        paths = stage_paths(toy["run"], stage)
        rows = (paths.log).read_text().splitlines()
        assert rows[0].startswith("step,loss,lr,grad_norm,step_time_s,samples_per_s")
        assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3]
        assert paths.loss_png.stat().st_size > 1000
        assert (paths.samples / "step-00000003.png").is_file()
        assert [p.name for p in paths.checkpoints.iterdir()] == ["step-00000003"]
        if stage >= 1:  # both render with the schedule they were trained on (v-prediction here)
            for model_dir in (paths.model, paths.checkpoints / "step-00000003" / "model"):
                assert noise_schedule(model_dir)["prediction_type"] == toy_recipe()["diffusion"]["prediction_type"]
    # stage 3 has EMA on: its output holds the EMA weights, its checkpoint the raw ones
    output = EmoModel.from_pretrained(stage_paths(toy["run"], 3).model).speed_encoder.state_dict()
    raw = EmoModel.from_pretrained(stage_paths(toy["run"], 3).checkpoints / "step-00000003" / "model")
    assert any(not torch.equal(v, raw.speed_encoder.state_dict()[k]) for k, v in output.items())


def test_emo_rt_train_subcommand_checks_before_work(tmp_path, capsys):
    """`emo-rt train` resolves a shipped recipe by name and fails on missing data with one line."""
    from emo_rt.cli import main as cli_main

    code = cli_main(["train", "--recipe", "tiny", "--stage", "0", "--data", str(tmp_path / "nowhere"),
                     "--out", str(tmp_path / "run")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"emo-rt: error: data directory {tmp_path / 'nowhere'} not found"]
    assert not (tmp_path / "run").exists()


def test_two_data_folders_train_together(tmp_path, toy, new_run):
    """--data A B: one sample stream over both folders' train clips, each folder with its own caches."""
    from tests.training.toy_data import write_toy_shards

    other = write_toy_shards(tmp_path / "other", num_clips=3, num_frames=12, resolution=64, seed=7)
    run = new_run(tmp_path / "run")
    checked = plan(toy["recipe"], 1, [toy["data"], other], run, resume=False)
    assert checked.data_dirs == (Path(toy["data"]), other)
    trainer = Trainer(checked, Distributed.from_env(), progress=False)
    trainer.model = EmoModel.from_pretrained(checked.start_model)
    stage = build_stage(1, trainer.model, checked.recipe)
    samples, _ = trainer.samples(trainer.model, stage)
    assert len(samples) == 4 + 3  # the toy folder's 4 train clips, then the other's 3
    assert [p.name for p in (other / "cache").iterdir()] and (Path(toy["data"]) / "cache").is_dir()
    last = samples[(len(samples) - 1, 0)]  # an item of the second folder, read through its own cache
    first = samples[(0, 0)]
    assert last["target_latents"].shape == first["target_latents"].shape
    assert not torch.equal(last["target_latents"], first["target_latents"])
