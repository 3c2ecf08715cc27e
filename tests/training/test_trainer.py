"""Trainer at toy scale: recipe validation, what each stage trains, overfitting a fixed batch, logs."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

import emo_rt.training
from emo_rt.config import EmoConfig
from emo_rt.errors import EmoError
from emo_rt.models import EmoModel
from emo_rt.schedulers import noise_schedule
from emo_rt.training.recipe import LossRecipe, RecipeError, load_recipe, recipe_from_dict
from emo_rt.training.stage_data import SampleStream, collate
from emo_rt.training.stages import build_stage, loss_weight_map, stage_parameter_names
from emo_rt.training.toy_data import toy_recipe, write_recipe
from emo_rt.training.trainer import (Distributed, Trainer, TrainingError, apply_gradient_checkpointing, initial_model,
                                     main, plan, stage_paths, start_model, train)



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
    (lambda r: r["stage2"].update(brow_weight=-1.0), "stage2: brow_weight must be"),
    (lambda r: r["stage1"].update(train_backbone=True), "stage1.train_backbone: only stages 2-3"),
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
    data = toy_recipe()
    data["stage1"]["warmup"] = 10
    path = write_recipe(tmp_path / "bad.yaml", data)
    code = main(["--recipe", str(path), "--stage", "1", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: recipe") and "stage1.warmup" in lines[0]


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
    start = initial_model(plan(toy["recipe"], stage, toy["data"], toy["run"], resume=True), Console(quiet=True))
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


def test_train_backbone_adds_the_2d_layers_to_a_clip_stage(toy, tmp_path):
    """stage2.train_backbone: stage 2 also moves the Backbone's 2D layers (resnets, spatial
    attention, conv_in), still never the frozen ReferenceNet, VAE or FaceLocator."""
    data = toy_recipe(steps=2)
    data["stage2"]["train_backbone"] = True
    recipe = write_recipe(tmp_path / "r.yaml", data)
    run = tmp_path / "run"
    shutil.copytree(stage_paths(toy["run"], 1).model, stage_paths(run, 1).model)
    train(recipe, 2, toy["data"], run, progress=False)
    before = EmoModel.from_pretrained(stage_paths(run, 1).model).state_dict()
    after = EmoModel.from_pretrained(stage_paths(run, 2).model).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for pattern in GROUPS[2] + [r"^backbone\.conv_in\.", r"resnets", r"\.attentions\.\d+\.transformer_blocks\.0\.attn1\."]:
        assert any(re.search(pattern, name) for name in changed), pattern
    for pattern in ["speed_", "reference_net.", "vae.", "face_locator.", "audio_encoder."]:
        assert not any(re.search(pattern, name) for name in changed), pattern
    end = EmoModel.from_pretrained(stage_paths(run, 2).model)
    assert set(stage_parameter_names(end, 2)) < set(stage_parameter_names(end, 2, train_backbone=True))
    with pytest.raises(ValueError, match="stages 2-3"):
        stage_parameter_names(end, 1, train_backbone=True)


def test_start_from_continues_a_finished_stage(toy, tmp_path):
    """stage1.start_from a finished stage-1 model: the stage starts from exactly those weights (no
    zeroed FaceLocator output, no inert temporal re-initialisation), in a run without a stage 0;
    a start_from that is not a model directory is one line before any work."""
    finished = stage_paths(toy["run"], 1).model
    data = toy_recipe()
    data["stage1"]["start_from"] = str(finished)
    recipe = write_recipe(tmp_path / "r.yaml", data)
    run = tmp_path / "run"
    start = initial_model(plan(recipe, 1, toy["data"], run, resume=False), Console(quiet=True))
    before = EmoModel.from_pretrained(finished).state_dict()
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())
    assert start.face_locator.conv_out.weight.any()  # a fresh stage 1 zeroes it
    data["stage1"]["start_from"] = str(tmp_path / "nowhere")
    with pytest.raises(TrainingError) as err:
        train(write_recipe(tmp_path / "bad.yaml", data), 1, toy["data"], run, progress=False)
    assert "stage1.start_from" in _one_line(err.value) and "not a model directory" in str(err.value)
    assert not run.exists()


def test_stage1_starts_inert_and_stage0_sets_the_scaling_factor(toy):
    start = initial_model(plan(toy["recipe"], 1, toy["data"], toy["run"], resume=True), Console(quiet=True))
    for name, param in start.backbone.named_parameters():
        if ".motion_modules." in f".{name}" and ".proj_out." in name or "audio_attn.to_out.0" in name:
            assert not param.any(), name
    stage0 = EmoModel.from_pretrained(stage_paths(toy["run"], 0).model)
    assert stage0.vae.config.scaling_factor == stage0.config.vae.scaling_factor != 1.0
    with torch.no_grad():
        latents = stage0.encode_images(torch.rand(4, 3, 64, 64) * 2 - 1)
    assert 0.3 < float(latents.std()) < 3.0


def test_a_stage_adopts_only_config_fields_no_earlier_stage_trained(toy):
    """From stage 1's toy model, stage 2 may toggle the prosody row and move the speed buckets (the
    audio projector is re-initialised, every trained part loads); stage 3 may move the buckets but
    not toggle the row (stage 2 trained the projector), and no stage may change the UNet."""
    directory = stage_paths(toy["run"], 1).model
    saved = EmoConfig.load(directory)
    assert saved.audio.prosody  # the toy recipe has the row, as the shipped one
    buckets = dict(bucket_centres=tuple(c + 0.01 for c in saved.speed.bucket_centres))
    wanted = dataclasses.replace(saved, audio=dataclasses.replace(saved.audio, prosody=False),
                                 speed=dataclasses.replace(saved.speed, **buckets))
    quiet = Console(quiet=True)
    adopted = start_model(directory, wanted, 2, quiet)
    before = EmoModel.from_pretrained(directory)
    assert not adopted.config.audio.prosody and adopted.config.speed.bucket_centres == buckets["bucket_centres"]
    assert adopted.config.vae.scaling_factor == saved.vae.scaling_factor  # stage 0's fit is kept
    for part in ("backbone", "reference_net", "vae", "face_locator", "audio_encoder", "speed_encoder"):
        a, b = getattr(adopted, part).state_dict(), getattr(before, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    projector = adopted.audio_projector.proj[0].weight.shape[1]
    assert projector == before.audio_projector.proj[0].weight.shape[1] * 2 // 3  # 3 rows -> 2 rows

    assert start_model(directory, dataclasses.replace(saved, speed=wanted.speed), 3, quiet).config.speed == wanted.speed
    with pytest.raises(TrainingError, match="audio.prosody differ"):
        start_model(directory, wanted, 3, quiet)
    wider = dataclasses.replace(saved, unet=dataclasses.replace(saved.unet, num_attention_heads=1))
    with pytest.raises(TrainingError, match="unet.num_attention_heads differ"):
        start_model(directory, wider, 2, quiet)



def test_stage2_grows_the_projector_for_the_held_pitch_row(toy, tmp_path):
    """Adding the held-pitch row keeps every trained weight: the grown projector reads the new row
    through zero weights, so its tokens equal the saved projector's for any value of that row."""
    directory = stage_paths(toy["run"], 1).model
    saved = EmoConfig.load(directory)
    wanted = dataclasses.replace(saved, audio=dataclasses.replace(saved.audio, prosody_hold=0.82))
    quiet = Console(quiet=True)
    grown = start_model(directory, wanted, 2, quiet)
    before = EmoModel.from_pretrained(directory)
    assert grown.config.audio.num_feature_rows == saved.audio.num_feature_rows + 1
    old = torch.randn(2, 7, saved.audio.num_feature_rows, saved.audio.hidden_size)
    new_row = torch.randn(2, 7, 1, saved.audio.hidden_size) * 5
    with torch.no_grad():
        assert torch.allclose(grown.audio_projector(torch.cat([old, new_row], dim=2)),
                              before.audio_projector(old), atol=1e-6)
        assert not torch.allclose(grown.audio_projector(torch.cat([old, new_row], dim=2)),
                                  before.audio_projector(torch.cat([old[:, :, :-1], new_row], dim=2)), atol=1e-3)
    with pytest.raises(TrainingError, match="audio.prosody_hold differ"):
        start_model(directory, wanted, 3, quiet)  # stage 2 trains the projector: too late at 3
    grown_dir = grown.save_pretrained(tmp_path / "grown")
    dropped = start_model(grown_dir, saved, 2, quiet)  # removing the row again re-initialises the projector
    assert dropped.audio_projector.proj[0].weight.shape == before.audio_projector.proj[0].weight.shape
    assert not torch.equal(dropped.audio_projector.proj[0].weight, before.audio_projector.proj[0].weight)


def test_a_stage_that_trains_the_2d_layers_adds_spatial_attention_as_the_identity(toy):
    """Attention at the finest level, added by a stage that trains the Backbone's 2D layers: every
    saved weight loads, the new transformers start with proj_out zero, and the grown model denoises
    exactly as the saved one (then its new layers get gradients). A stage that does not train the
    2D layers, or a config that removes attention, is refused."""
    directory = stage_paths(toy["run"], 1).model
    saved = EmoConfig.load(directory)
    assert not saved.unet.attention_levels[0]
    levels = (True,) + tuple(saved.unet.attention_levels[1:])
    wanted = dataclasses.replace(saved, unet=dataclasses.replace(saved.unet, attention_levels=levels))
    quiet = Console(quiet=True)
    grown = start_model(directory, wanted, 2, quiet, trains_2d=True)
    before = EmoModel.from_pretrained(directory)
    assert grown.backbone.num_spatial_layers > before.backbone.num_spatial_layers
    for part in ("backbone", "reference_net"):
        old, new = getattr(before, part).state_dict(), getattr(grown, part).state_dict()
        assert all(torch.equal(old[k], new[k]) for k in old), part
        added = [k for k in new if k not in old]
        assert added and all(".attentions." in k for k in added)
        zeros = [k for k in added if ".proj_out." in k]
        assert zeros and all(not new[k].any() for k in zeros) and any(new[k].any() for k in added if k not in zeros)

    c, torch_gen = saved, torch.Generator().manual_seed(0)
    h = c.resolution // c.vae.downsample_factor
    latents = torch.randn(1, 4, c.num_frames, h, h, generator=torch_gen)
    reference = torch.randn(1, 4, h, h, generator=torch_gen)
    motion = torch.randn(1, c.num_motion_frames, 4, h, h, generator=torch_gen)
    audio = torch.randn(1, c.num_frames, c.audio.num_tokens, c.audio.token_dim, generator=torch_gen)
    speed = torch.randn(1, c.num_frames, c.speed.num_tokens, c.speed.token_dim, generator=torch_gen)
    face = torch.randn(1, 4, h, h, generator=torch_gen)

    def denoise(model: EmoModel) -> torch.Tensor:
        return model.backbone(latents, torch.tensor([500]), model.reference_net(reference),
                              model.reference_net.motion_features(motion), audio, speed, face)

    with torch.no_grad():
        assert torch.allclose(denoise(grown), denoise(before), atol=1e-5)
    denoise(grown).square().mean().backward()
    first = grown.backbone.down_blocks[0].attentions[0]
    assert first.proj_out.weight.grad.abs().sum() > 0

    with pytest.raises(TrainingError, match="unet.attention_levels differ"):
        start_model(directory, wanted, 2, quiet)  # stage 2 without train_backbone
    fewer = dataclasses.replace(saved, unet=dataclasses.replace(
        saved.unet, attention_levels=(False, False) + tuple(saved.unet.attention_levels[2:])))
    with pytest.raises(TrainingError, match="unet.attention_levels differ"):
        start_model(directory, fewer, 2, quiet, trains_2d=True)


def test_loss_weights_the_face_box_halves():
    """An 8-row face box in a 16x16 mask: background 1, upper half 1 + face + brow, lower half
    1 + face + mouth."""
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    weight = loss_weight_map(mask, 16, LossRecipe(face_weight=1.0, mouth_weight=3.0, brow_weight=1.5))[0, 0]
    assert weight[0, 0] == 1 and weight[4:8, 4:12].eq(3.5).all() and weight[8:12, 4:12].eq(5).all()
    assert loss_weight_map(mask, 16, LossRecipe())[0, 0, 4:8, 4:12].eq(2).all()  # brow_weight defaults to 0


def test_a_stage_can_replace_the_brow_weight():
    """A stage's brow_weight replaces loss.brow_weight in that stage only (the rest of `loss` kept)."""
    data = toy_recipe()
    data["loss"] = {"brow_weight": 1.5}
    data["stage2"]["brow_weight"] = 4.0
    toy_stages = recipe_from_dict(data)
    assert [toy_stages.loss_for(k).brow_weight for k in (0, 1, 2, 3)] == [1.5, 1.5, 4.0, 1.5]
    assert toy_stages.loss_for(2).mouth_weight == toy_stages.loss.mouth_weight
    model = EmoModel(toy_stages.model_config())
    assert build_stage(2, model, toy_stages).loss_recipe.brow_weight == 4.0
    assert build_stage(1, model, toy_stages).loss_recipe.brow_weight == toy_stages.loss.brow_weight


# ---- overfitting one fixed batch --------------------------------------------------------------
@pytest.mark.parametrize("stage, lr, ratio", [(0, 1e-3, 0.5), (1, 1e-3, 0.4), (2, 3e-3, 0.7), (3, 3e-3, 0.75)])
def test_loss_goes_down_on_a_fixed_batch(toy, stage, lr, ratio, steps=20):
    """Fixed batch (frames, noise, timesteps, dropout all fixed), only the stage's parameters train.
    Measured ratios (mean of the last 5 losses / first): 0.28, 0.08, 0.41, 0.47."""
    checked = plan(toy["recipe"], stage, toy["data"], toy["run"], resume=True)
    model = initial_model(checked, Console(quiet=True))
    module = build_stage(stage, model, checked.recipe, crop=32 if stage == 0 else 0)
    dataset, _ = Trainer(checked, Distributed(), progress=False).datasets(model, module)
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
    model = initial_model(checked, Console(quiet=True))
    module = build_stage(2, model, checked.recipe)
    dataset, _ = Trainer(checked, Distributed(), progress=False).datasets(model, module)
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
