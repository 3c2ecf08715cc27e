"""Shipping a trained run as the packaged model: fp16, scheduler kept, size-limited, atomic."""

import json

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors import safe_open

from emo_rt.config import tiny
from emo_rt.errors import EmoError
from emo_rt.models import EmoModel
from emo_rt.schedulers import noise_schedule
from emo_rt.training.release.ship import ship


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model_dir = EmoModel(tiny()).save_pretrained(run / "stage3" / "model")
    DDPMScheduler(prediction_type="v_prediction").save_pretrained(model_dir / "scheduler")
    info = {"stage": 3, "steps": 5, "global_batch": 4, "processes": 2, "median_step_s": 1.0,
            "seconds_this_run": 7.0, "recipe": {"model": "tiny"}, "precision": "bf16",
            "data": ["/data/corpus/shards", "/data/corpus1/shards"],
            "machine": {"cpu": "AMD EPYC", "cores": 2, "cpu_flags": ["avx2", "avx512f", "avx512_bf16"], "gpu": None}}
    (model_dir / "training.json").write_text(json.dumps(info))
    log = "step,loss,lr,grad_norm,step_time_s,samples_per_s\n" + "".join(
        f"{k},0.5,1e-4,1.0,{0.5 * k},4.0\n" for k in (1, 2, 3, 4, 5))
    (run / "stage3" / "log.csv").write_text(log)
    return run


def test_ship_writes_fp16_model_with_its_scheduler(run_dir, tmp_path):
    out = ship(run_dir, tmp_path / "default_model")
    with safe_open(str(out / "backbone.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    assert noise_schedule(out)["prediction_type"] == "v_prediction"
    stage = json.loads((out / "training.json").read_text())["stages"][0]
    assert stage["steps"] == 5
    assert stage["step_seconds"] == 0.5 * (1 + 2 + 3 + 4 + 5)  # from log.csv, over every resumed run
    source = EmoModel.from_pretrained(run_dir / "stage3" / "model")
    shipped = EmoModel.from_pretrained(out)
    for (name, a), (_, b) in zip(source.state_dict().items(), shipped.state_dict().items()):
        torch.testing.assert_close(b, a.half().float() if a.is_floating_point() else a, rtol=0, atol=0, msg=name)


def test_over_the_size_limit_leaves_nothing(run_dir, tmp_path):
    with pytest.raises(EmoError, match="over the 1 MB limit"):
        ship(run_dir, tmp_path / "default_model", max_mb=1)
    assert list(tmp_path.iterdir()) == []


def test_ship_through_the_installed_script(run_dir, tmp_path):
    """`emo-rt ship`: the size limit is one line, exit 2, nothing written; then the model is shipped."""
    from tests.cli.conftest import assert_error, assert_ok, emo_rt, files_under

    assert_error(emo_rt("ship", run_dir, tmp_path / "small", "--max-mb", "1"), "over the 1 MB limit")
    assert files_under(tmp_path) == []
    shipped = emo_rt("ship", run_dir, tmp_path / "model")
    assert_ok(shipped)
    assert f"wrote {tmp_path / 'model'}" in shipped.stdout and (tmp_path / "model" / "training.json").is_file()


def test_unfinished_run_is_refused(tmp_path):
    with pytest.raises(EmoError, match="not a finished stage 3 model"):
        ship(tmp_path, tmp_path / "default_model")


def test_model_card_is_written_from_the_measurements(run_dir, tmp_path):
    from emo_rt.cli import main

    card_main = lambda args: main(["model-card", *args])  # noqa: E731

    out = ship(run_dir, tmp_path / "default_model")
    report = {
        "settings": {"steps": 8, "cfg": 1.0, "scheduler": "ddim", "seed": 0},
        "data": {"clips": ["c00001"], "split": "test", "fps": 25},
        "rows": {key: {"lip_r": r, "offset": 0, "brow_r": r / 2} for key, r in zip(("model", "oracle", "floor"),
                                                                                   (0.8, 0.95, 0.0))},
        "drift": {"first": 0.9, "last": 0.88, "frames": 1500},
        "speed_control": None, "timings": {"total_seconds": 900.0},
    }
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.json").write_text(json.dumps(report))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    manifest = {"generator": {"name": "emo-rt synth-data", "version": 1, "seed": 0, "num_clips": 4, "size": 256,
                              "fps": 25, "seconds": 5.0, "speech_engine": "espeak-ng"},
                "splits": {"train": [1, 2], "val": [3], "test": [4]}, "identities": {"a": 1, "b": 2}, "voices": {"v": 1}}
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    corpus1 = tmp_path / "corpus1" / "synth"
    corpus1.mkdir(parents=True)
    (corpus1 / "manifest.json").write_text(json.dumps(dict(manifest, generator={**manifest["generator"], "seed": 1})))
    assert card_main([str(out), "--report", str(tmp_path / "report"), "--corpus", str(corpus), str(corpus1)]) == 0
    text = (out / "README.md").read_text()
    assert "| model | 0.800 | +0 | 0.400 |" in text  # the eval table, from report.json
    assert "| 3 | head speed: temporal modules + speed layers | corpus/shards corpus1/shards | 5 | 4 | bf16 |" in text
    assert "| 0.00 h |" in text  # 7.5 s of logged steps
    assert "on a CPU machine (AMD EPYC, 2 cores, AVX-512 BF16)" in text
    assert "`emo-rt synth-data corpus1/synth --clips 4 --seed 1 --seconds 5`" in text
    assert "84% of the oracle" in text and "--drift-seconds 60" in text and "(15 min on" in text
    assert "renders by default (its `render.json`) with ddim 40 steps" in text  # no render.json: the library's
    assert "train/val/test 2/1/1" in text
    assert "from random init with `training/recipes/tiny.yaml`" in text  # the default recipe
    assert card_main([str(out), "--report", str(tmp_path / "missing"), "--corpus", str(corpus)]) == 2
    assert (out / "README.md").read_text() == text  # a failed run leaves the card as it was
    previous = dict(report, rows={**report["rows"], "model": {"lip_r": 0.5, "offset": 1, "brow_r": 0.1}})
    (tmp_path / "previous").mkdir()
    (tmp_path / "previous" / "report.json").write_text(json.dumps(previous))
    assert card_main([str(out), "--report", str(tmp_path / "report"), "--corpus", str(corpus),
                      "--baseline", str(tmp_path / "previous"), "--recipe", "lab/recipes/tiny_v1.yaml"]) == 0
    lines = (out / "README.md").read_text().splitlines()
    assert sum("lab/recipes/tiny_v1.yaml" in line for line in lines) == 2  # header and training command
    model_line = lines.index(next(line for line in lines if line.startswith("| model | 0.800")))
    assert lines[model_line + 1].startswith("| previous model | 0.500 | +1 | 0.100 |")
