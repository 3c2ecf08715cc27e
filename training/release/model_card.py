"""Write a shipped model's card (README.md in its directory) from what was measured: the manifests
of the corpora it was trained on, the training summary `ship` wrote (steps, batch, data, machine and
step times per stage) and an `emo-rt eval` report. Written to a temporary file and renamed into place.

    emo-rt model-card emo_rt/default_model --report REPORT_DIR --corpus corpus/synth [corpus1/synth ...] \
        [--notes NOTES.md] [--baseline PREVIOUS_REPORT_DIR]
"""

from __future__ import annotations

import json
from pathlib import Path

from emo_rt.errors import EmoError
from emo_rt.eval.report import table
from emo_rt.io.files import atomic_output, short_name

STAGE_JOBS = {
    0: "the autoencoder on crops of corpus frames",
    1: "frame pairs: Backbone 2D layers, ReferenceNet, FaceLocator",
    2: "clips with audio: temporal modules + audio attention",
    3: "head speed: temporal modules + speed layers",
    4: "distillation: the Backbone renders in few single-pass steps what the guided teacher does in many",
}


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise EmoError(f"{what} not found: {path}")
    return json.loads(path.read_text())


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.0f} min"


def _data_names(stage: dict) -> str:
    """The stage's --data folders as `corpus/shards` style names (the folder and its parent)."""
    return " ".join(short_name(d) for d in stage.get("data") or ["corpus/shards"])


def training_table(stages: list[dict]) -> str:
    lines = ["| stage | trains | data | steps | global batch | precision | processes | median s/step | training time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in stages:
        seconds = s.get("step_seconds", s.get("seconds_this_run"))
        lines.append(f"| {s['stage']} | {STAGE_JOBS.get(s['stage'], '')} | {_data_names(s)} | {s['steps']} | "
                     f"{s['global_batch']} | {s.get('precision') or 'fp32'} | {s['processes']} | "
                     f"{s['median_step_s']:.2f} | {_minutes(seconds)} |")
    total = sum(s.get("step_seconds", s.get("seconds_this_run")) or 0 for s in stages)
    lines.append(f"| all | | | | | | | | {total / 3600:.2f} h |")
    return "\n".join(lines)


DEFAULT_RECIPE = "training/recipes/tiny.yaml"


def card(model_dir: Path, report: dict, corpora: dict[str, dict], notes: str = "",
         baseline: dict | None = None, recipe: str = DEFAULT_RECIPE) -> str:
    """The card's Markdown: what the model is (trained with `recipe`, as the repository names it), its
    corpora (folder -> manifest), training and evaluation (the eval report's tables, with `baseline`'s
    model row beside it when given), limits."""
    config = _read_json(model_dir / "config.json", "model config")
    summary = _read_json(model_dir / "training.json", "training summary (written by ship)")
    sections = [_header(model_dir, config, recipe), _corpus(corpora), _training(summary, recipe),
                _evaluation(report, baseline), _limits(config)]
    if notes.strip():
        sections.append(notes.strip())
    return "\n\n".join(sections) + "\n"


def _header(model_dir: Path, config: dict, recipe: str) -> str:
    from emo_rt.pipeline import model_render_settings

    size_mb = sum(f.stat().st_size for f in model_dir.rglob("*.safetensors")) / 2**20
    r = config.get("resolution", "?")
    render = model_render_settings(model_dir)
    return (f"# emo-rt default model\n\nThe model `emo-rt render` uses when `--weights` is not given: the `tiny` "
            f"preset ({r}x{r} frames, {config.get('fps', 25)} fps, {config.get('num_frames', '?')}-frame windows), fp16 "
            f"safetensors, {size_mb:.1f} MB. Trained by us from random init with `{recipe}`; no "
            f"outside weights or data. It renders by default (its `render.json`) with {render.scheduler} "
            f"{render.steps} steps, cfg {render.cfg:g}, each window starting from the {render.start}.")


def _corpus(corpora: dict[str, dict]) -> str:
    lines = ["## Corpora", ""]
    for folder, corpus in corpora.items():
        name = Path(folder).parent.name or "corpus"
        gen, splits = corpus["generator"], {k: len(v) for k, v in corpus["splits"].items()}
        lines.append(
            f"- `emo-rt synth-data {name}/synth --clips {gen['num_clips']} --seed {gen['seed']} --seconds "
            f"{gen['seconds']:g}`, then `emo-rt preprocess {name}/synth {name}/shards` (128x128): {gen['num_clips']} "
            f"clips of {len(corpus['identities'])} identities and {len(corpus['voices'])} voices, split by identity "
            f"into train/val/test {splits.get('train', 0)}/{splits.get('val', 0)}/{splits.get('test', 0)}.")
    gen = next(iter(corpora.values()))["generator"]
    lines += ["", f"{gen['name']} v{gen['version']}, {gen['size']}px, {gen['fps']} fps, speech by "
              f"{gen['speech_engine']}. Only train splits are trained on."]
    return "\n".join(lines)


def _training(summary: dict, recipe: str) -> str:
    from emo_rt.runtime.machine import describe

    run_dir = Path(summary.get("source", "runs/tiny/stage3/model")).parent.parent
    machines = [s["machine"] for s in summary["stages"] if s.get("machine")]
    where = (f"a CPU machine ({describe(machines[0])}), no GPU" if machines
             else "the project's 2-core CPU machine, no GPU")
    return ("## Training\n\nEach stage ran as `OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 -m "
            f"emo_rt.training.trainer --recipe {recipe} --stage K --data DATA --out {run_dir} "
            f"--resume` (DATA: the table's data column) on {where}, shared with other work; training time is the "
            "sum of the logged step times over every resumed run (start-up, caches, previews and checkpoints not "
            "included).\n\n" + training_table(summary["stages"]))


def _evaluation(report: dict, baseline: dict | None) -> str:
    settings, data = report["settings"], report["data"]
    drift = f" --drift-seconds {report['drift']['frames'] / data['fps']:.0f}" if report.get("drift") else ""
    seconds = report["timings"]["total_seconds"]
    lines = ["## Evaluation", "",
             f"`emo-rt eval --data corpus/shards --corpus corpus/synth --clips {len(data['clips'])} --steps "
             f"{settings['steps']} --cfg {settings['cfg']:g}{drift}` ({seconds / 60:.0f} min on the 2-core CPU box) on "
             f"held-out {data['split']} identities ({', '.join(data['clips'])}), {settings['scheduler']} "
             f"{settings['steps']} steps, cfg {settings['cfg']:g}, seed {settings['seed']}:", "",
             table(report, baseline), ""]
    model_row, oracle_row = report["rows"]["model"], report["rows"]["oracle"]
    if model_row.get("lip_r") is not None and oracle_row.get("lip_r"):
        lines.append(f"Lip-sync r is {100 * model_row['lip_r'] / oracle_row['lip_r']:.0f}% of the oracle's "
                     "(the evaluator reading the real test videos).")
    if model_row.get("identity") is not None and oracle_row.get("identity"):
        lines.append(f"Identity similarity is {100 * model_row['identity'] / oracle_row['identity']:.0f}% of the "
                     "oracle's.")
    if report.get("speed_control"):
        sc = report["speed_control"]
        pairs = ", ".join(f"{a:g} -> {b:.3f}" for a, b in zip(sc["speeds"], sc["measured"]))
        lines.append(f"Speed control (requested -> measured deg/frame): {pairs}.")
    if report.get("drift"):
        dr = report["drift"]
        span = f"{dr['span'] / data['fps']:g} s" if "span" in dr else "window"  # reports before the span: one window
        lines.append(f"Drift: whole-frame SSIM to the reference {dr['first']:.3f} in the first {span}, "
                     f"{dr['last']:.3f} in the last, over {dr['frames'] / data['fps']:.0f} s.")
    return "\n".join(lines)


def _limits(config: dict) -> str:
    audio = ("- The audio encoder is the tiny preset's wav2vec2 at its seeded random init, kept frozen: it carries "
             "loudness (the mouth follows it) but little pitch"
             + (", so a weightless prosody row (F0 in semitones from the voiced median, voicing, loudness) is "
                "stacked beside it for the brows." if config.get("audio", {}).get("prosody") else "."))
    return ("## Limits\n\n- It has only seen our synthetic cartoon faces: real photographs are out of its "
            f"distribution.\n{audio}\n- 128x128 output; for faces at photo quality train the `sd15` preset on real data.")


def write_card(model_dir: str | Path, report_dir: str | Path, corpus_dirs,
               notes_path: str | Path | None = None, baseline_dir: str | Path | None = None,
               recipe: str | None = None) -> Path:
    """README.md in `model_dir` from the eval report in `report_dir` and the manifests in
    `corpus_dirs` (one folder or several; and `baseline_dir`'s report, the previous model's, as a row
    beside it)."""
    model_dir = Path(model_dir)
    notes = ""
    if notes_path is not None:
        if not Path(notes_path).is_file():
            raise EmoError(f"notes file not found: {notes_path}")
        notes = Path(notes_path).read_text()
    report = _read_json(Path(report_dir) / "report.json", "eval report")
    corpus_dirs = [corpus_dirs] if isinstance(corpus_dirs, (str, Path)) else list(corpus_dirs)
    corpora = {str(d): _read_json(Path(d) / "manifest.json", "corpus manifest") for d in corpus_dirs}
    baseline = _read_json(Path(baseline_dir) / "report.json", "baseline eval report") if baseline_dir else None
    text = card(model_dir, report, corpora, notes, baseline, recipe or DEFAULT_RECIPE)
    path = model_dir / "README.md"
    with atomic_output(path, "model card") as tmp:
        tmp.write_text(text)
    return path
