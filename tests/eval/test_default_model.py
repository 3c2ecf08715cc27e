"""The shipped default model lip-syncs: a quick version of `emo-rt eval` (one held-out clip, the
model's own render settings) must stay within a measured margin of its figure, so a regression
fails CI."""

from __future__ import annotations

import pytest

from emo_rt.errors import WeightsError
from emo_rt.pipeline import default_model_dir

MIN_LIP_R = 0.88  # measured: see the test's docstring


def _default_model_or_skip():
    try:
        return default_model_dir()
    except WeightsError as err:
        pytest.skip(f"emo_rt/default_model has no model yet (default_model_dir(): {err})")


@pytest.mark.slow
def test_default_model_lip_syncs_a_held_out_clip(request):
    """Rendered at the model's defaults (render.json: ddim 8 steps, cfg 3.5, seed 0), lip-sync r >= 0.88.

    Measured on this clip (c00003 of the seed-23 corpus) over render seeds 0..4, one thread on the
    2-core CPU box: 0.961, 0.928, 0.963, 0.959, 0.961 (mean 0.954, sd 0.015); the oracle reads
    0.998. The bar is the lowest seed minus 3 sd (0.883), rounded down: another seed or another
    CPU's arithmetic does not fail it, a model that lost a tenth of its lip-sync (0.961 -> 0.865)
    does; the old bar, 0.5, let it lose half. The card's 0.918 is a mean over 12 other clips (the
    seed-0 corpus's test split), so it is not this clip's figure; the bar is 0.04 under it."""
    from emo_rt.eval import EvalSettings, HeldOutData, evaluate, load_pipeline
    from emo_rt.pipeline import model_render_settings

    model_dir = _default_model_or_skip()
    small_corpus = request.getfixturevalue("small_corpus")  # made only when there is a model to test
    settings = EvalSettings(render=model_render_settings(model_dir), clips=1, drift_seconds=0, speed_seconds=0)
    report = evaluate(load_pipeline(model_dir), HeldOutData(*small_corpus), settings, progress=False)
    model, oracle = report["rows"]["model"], report["rows"]["oracle"]
    assert report["data"]["clips"] == ["c00003"]  # the clip the bar was measured on
    assert oracle["lip_r"] >= 0.9, oracle  # the measurement itself works on this clip
    assert model["lip_r"] >= MIN_LIP_R, model
