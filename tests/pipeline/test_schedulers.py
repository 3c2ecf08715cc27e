"""The renderer samples with the noise schedule a model was trained with."""

from diffusers import DDPMScheduler

from emo_rt.schedulers import DEFAULT_NOISE_SCHEDULE, make_scheduler, noise_schedule


def test_trained_schedule_is_read_from_the_model_dir(tmp_path):
    assert noise_schedule(tmp_path)["prediction_type"] == DEFAULT_NOISE_SCHEDULE["prediction_type"] == "epsilon"
    # what training writes: MODEL/scheduler/scheduler_config.json (diffusers' layout)
    DDPMScheduler(prediction_type="v_prediction", beta_schedule="scaled_linear").save_pretrained(tmp_path / "scheduler")
    schedule = noise_schedule(tmp_path)
    assert schedule["prediction_type"] == "v_prediction"
    assert make_scheduler("ddim", schedule).config.prediction_type == "v_prediction"
