"""Writes an evaluation report: report.json (everything), report.md (the table) and curves.png
(generated vs true mouth opening and brow raise over time), each to a temporary file renamed into place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emo_rt.errors import InputError
from emo_rt.io.files import atomic_output

ROWS = (("model", "model"),
        ("ceiling", "ceiling (real clips through the model's autoencoder)"),
        ("oracle", "oracle (real test videos)"),
        ("blurred", "real clips blurred (Gaussian, 1.5 px)"),
        ("floor", "floor (still reference)"),
        ("other_identity", "another test identity's real frames"))
MOTION = (("lip_r", "lip-sync r"), ("offset", "best offset (frames)"), ("brow_r", "brow r"),
          ("silent_mouth", "mouth open in silence"), ("flicker", "flicker (levels)"), ("drift", "drift"),
          ("speed_rho", "speed rho"))
IMAGE = (("identity", "identity similarity"), ("face_ssim", "face SSIM"), ("background_psnr", "background PSNR (dB)"),
         ("sharpness_ratio", "sharpness vs real"), ("face_detector", "face detector"), ("fid", "FID analogue"),
         ("fvd", "FVD analogue"))
COLUMNS = MOTION + IMAGE


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "offset":
        return f"{value:+d}"
    if key == "drift":
        return f"{100 * value:.1f}%"
    if key in ("background_psnr", "fid", "fvd"):
        return f"{value:.1f}"
    return f"{value:.3f}"


def _table(report: dict, columns, baseline: dict | None = None) -> str:
    rows = [(title, report["rows"].get(key)) for key, title in ROWS]
    if baseline is not None:  # the previous model's row, measured the same way
        rows.insert(1, ("previous model", baseline["rows"]["model"]))
    lines = ["| row | " + " | ".join(title for _, title in columns) + " |", "| --- " * (len(columns) + 1) + "|"]
    for title, values in rows:
        if values is not None and any(values.get(k) is not None for k, _ in columns):
            lines.append(f"| {title} | " + " | ".join(_cell(k, values.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)


def table(report: dict, baseline: dict | None = None) -> str:
    """Two Markdown tables: sync and motion, then image and identity (with `baseline`'s model row)."""
    return _table(report, MOTION, baseline) + "\n\n" + _table(report, IMAGE, baseline)


def markdown(report: dict) -> str:
    s, d, t = report["settings"], report["data"], report["timings"]
    model = report["rows"]["model"]
    guide = ", windows start from pure noise" if s.get("start", "noise") == "noise" else ""
    lines = [
        "# emo-rt eval",
        "",
        f"Model: `{report.get('weights', '?')}` ({report.get('backend', 'torch')}); {len(d['clips'])} {d['split']} "
        f"clip(s) of `{d['shards']}` ({', '.join(d['clips'])}; {sum(d['frames'])} frames), ground truth from "
        f"`{d['corpus']}`; {s['scheduler']} {s['steps']} steps, cfg {s['cfg']}{guide}, seed {s['seed']}, reference = "
        f"frame {s['reference_frame']} of each clip.",
        "",
        table(report),
        "",
    ]
    silent = [report["rows"][k].get("silent_mouth") for k in ("model", "oracle")]
    if None not in silent and silent[1] > 0:
        lines.append(f"Mouth opening in silent frames: {silent[0]:.3f} generated vs {silent[1]:.3f} real "
                     f"({silent[0] / silent[1]:.2f}x).")
    spread = report.get("seed_spread")
    if spread:
        names = dict(COLUMNS)
        lines.append(f"Over render seeds {', '.join(map(str, spread['seeds']))} (the clips; the model row is seed "
                     f"{spread['seeds'][0]}'s), mean +/- sd: " + ", ".join(
                         f"{names[k]} {_cell(k, v['mean'])} +/- {_cell(k, v['sd'])}"
                         for k, v in spread.items() if k != "seeds") + ".")
    if model.get("lip_r_of_oracle") is not None:
        lines.append(f"Model lip-sync r is {100 * model['lip_r_of_oracle']:.0f}% of the oracle's.")
    ev = report["evaluator"]
    lines.append(f"Evaluator on all {ev['clips']} real {d['split']} clips (Pearson r vs ground truth, mean over the "
                 "clips where the label moves): " +
                 ", ".join(f"{k} {_cell('r', v)}" for k, v in ev["r"].items()) + ".")
    o = report["oracle_speed"]
    if o["rho"] is not None:
        lines.append(f"Oracle speed rho: measured vs true mean head speed across those {o['clips']} clips (slope "
                     f"{o['slope']:.2f} measured per true deg/frame).")
    if report["drift"]:
        dr = report["drift"]
        lines.append(f"Drift: whole-frame SSIM to the reference, first {dr['window']} frames {dr['first']:.3f}, "
                     f"last {dr['window']} frames {dr['last']:.3f}, over {dr['frames']} frames "
                     f"({dr['frames'] / d['fps']:.0f} s).")
    if report["speed_control"]:
        sc = report["speed_control"]
        pairs = ", ".join(f"{a:g} -> {b:.3f}" for a, b in zip(sc["speeds"], sc["measured"]))
        ratio = sc.get("fastest_over_slowest")
        lines.append(f"Speed control: --speed {pairs} deg/frame measured (slope {sc['slope']:.3f} measured per "
                     "requested deg/frame" + (f"; fastest / slowest {ratio:.2f}x" if ratio is not None else "") + ").")
    lines += ["", "| render | frames | seconds | s/frame |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['render']} | {r['frames']} | {r['seconds']:.1f} | {r['seconds_per_frame']:.3f} |"
              for r in t["renders"]]
    lines += ["", f"Rendered {t['rendered_frames']} frames in {t['render_seconds']:.1f} s; whole evaluation "
                  f"{t['total_seconds']:.1f} s.", "",
              "Columns: lip-sync / brow r = Pearson r of the evaluator's reading of the video vs the true curve "
              f"(mean over clips); best offset = lag in +/-{s['max_lag']} frames with the highest r (mean over "
              "clips; > 0: video late); face SSIM / background PSNR = similarity to the reference inside / "
              "outside the clip's face box; flicker = mean frame-to-frame change on pixels that never change in "
              "the real clip; drift = relative loss of whole-frame SSIM to the reference, the render's last tenth "
              "vs its first (at least one window each); speed rho = Spearman of the requested vs the measured "
              "head speed; mouth open in silence = the evaluator's mouth opening over frames whose audio is "
              "silent; identity similarity = mean cosine of the evaluator's identity embedding of each frame to "
              "the reference's; sharpness vs real = high-frequency energy in the face box over the real clip's; "
              "face detector = mean score of mediapipe's face detection (a model we did not train) over every "
              "4th frame, 0 where it finds no face: a face broken into patches scores low where the evaluator's "
              "identity does not; FID / FVD analogue = Fréchet distance to the real clips in the evaluator's "
              "features, per frame / per 8-frame sequence (the oracle row: two disjoint halves of the real "
              "clips, i.e. two samples of different identities; rows that render the same clips as the real "
              "set, the model's and the blurred copy's, can go below it, towards 0).", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = report["curves"]
    panels = [("", "lip_r", "mouth opening"), ("brow_", "brow_r", "brow raise")]  # (curve key prefix, score, title)
    fig, axes = plt.subplots(len(curves), len(panels), figsize=(10 * len(panels), 2.6 * len(curves)), squeeze=False)
    for row, curve, per_clip in zip(axes, curves, report["rows"]["model"]["per_clip"]):
        t = np.arange(len(curve["true"])) / report["data"]["fps"]
        for ax, (key, score, label) in zip(row, panels):
            ax.plot(t, curve[key + "true"], color="black", lw=1.5, label="true")
            ax.plot(t, curve[key + "oracle"], color="grey", lw=1, ls="--", label="evaluator on the real video")
            ax.plot(t, curve[key + "model"], color="tab:red", lw=1.2, label=f"generated (r {per_clip[score]:.2f})")
            ax.set_title(f"{curve['clip']}: {label}", fontsize=9)
            ax.set_ylabel(label.split()[-1])
            ax.legend(fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    fig.tight_layout()
    with atomic_output(path, "plot") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def check_out_dir(out_dir: str | Path) -> Path:
    """The report folder checked before any work (its parent must exist; InputError when it cannot
    be written). Creates nothing: an eval that fails or is stopped leaves no empty folder."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder for the report")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: its parent folder {out.parent} does not exist")
    from emo_rt.io.files import check_output_dir, check_output_path

    check_output_dir(out, "--out")
    if out.is_dir():
        check_output_path(out / "report.json", "report")
    return out


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    out = check_out_dir(out_dir)
    out.mkdir(exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "curves.png"}
    with atomic_output(paths["json"], "report") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    with atomic_output(paths["md"], "report") as tmp:
        tmp.write_text(markdown(report))
    plot(report, paths["png"])
    return paths
