"""`emo-rt eval`: render held-out clips and score them against the synthetic corpus's ground truth
with the shipped face evaluator. Entry point: `run_eval` (the CLI's), or `evaluate` with a pipeline
of your own."""

from __future__ import annotations

from pathlib import Path

from .data import HeldOutData
from .runner import EvalSettings, evaluate, load_pipeline


def run_eval(data: str | Path, corpus: str | Path, out_dir: str | Path, weights: str | Path | None = None,
             settings: EvalSettings = EvalSettings(), backend: str = "torch", engines: str | Path | None = None,
             dtype: str = "float32", evaluator_dir: str | Path | None = None,
             progress: bool = True) -> tuple[dict, dict[str, Path]]:
    """Check the inputs, load the model and evaluator, render and score, write the report; returns
    the report and the paths written (json, md, png)."""
    from emo_rt.pipeline import default_model_dir

    from .evaluator import Evaluator
    from .report import check_out_dir, write_report

    held_out = HeldOutData(data, corpus)
    held_out.entries(settings.split)  # no clips: one clear error before any model is loaded
    check_out_dir(out_dir)
    weights = Path(weights) if weights is not None else default_model_dir()
    evaluator = Evaluator.from_pretrained(evaluator_dir)
    pipeline = load_pipeline(weights, backend, engines, dtype)
    report = {"weights": str(weights), "backend": pipeline.components.name, "dtype": dtype,
              **evaluate(pipeline, held_out, settings, evaluator=evaluator, progress=progress)}
    return report, write_report(report, out_dir)


__all__ = ["EvalSettings", "HeldOutData", "evaluate", "load_pipeline", "run_eval"]
