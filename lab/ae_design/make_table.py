"""The README's candidate table from results/*.json (written by evaluate.py).

    python lab/ae_design/make_table.py [NAME ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def row(r: dict) -> str:
    t, s = r["test"], r.get("seed7")
    tr = r.get("training", {})
    args = tr.get("args", {})
    recipe = (f"{tr.get('steps', '?')} x B{args.get('batch', '?')} {args.get('crop', '?')}px, lr {args.get('lr', '?')}"
              + (f", edge {args['edge']}" if args.get("edge") else "")
              + (f", perc {args['perceptual']}" if args.get("perceptual") else "")) if tr else "shipped"
    minutes = f"{tr['train_minutes']:.0f}" if tr else "-"
    seed7 = (f"{s['clips']} | {s['psnr']:.2f} / {s['psnr_face']:.2f} / {s['psnr_bg']:.2f} | {s['brow_r_vae']:.3f} | {s['mouth_r_vae']:.3f}"
             if s else "- | - | - | -")
    return (f"| {r['name']} | {r['class'].replace('Autoencoder', 'AE')} {r['config']['latent_channels']}ch | {recipe} | {minutes} "
            f"| {t['psnr']:.2f} / {t['psnr_face']:.2f} / {t['psnr_bg']:.2f} | {t['brow_r_vae']:.3f} | {t['mouth_r_vae']:.3f} "
            f"| {seed7} | {r['decoder_gflop']:.3f} | {r['decoder_ms_per_frame']:.1f} | {r['encoder_gflop']:.3f} |")


def main() -> None:
    names = sys.argv[1:] or sorted(p.stem for p in RESULTS.glob("*.json"))
    results = [json.loads((RESULTS / f"{n}.json").read_text()) for n in names]
    print("| run | class, latent ch | training | train min | test PSNR all / face / bg | test brow r | test mouth r "
          "| seed-7 clips | seed-7 PSNR all / face / bg | seed-7 brow r | seed-7 mouth r | dec GFLOP | dec ms/frame | enc GFLOP |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(row(r))
    if results:
        t, s = results[0]["test"], results[0].get("seed7", {})
        print(f"\nReal frames (no round trip): test brow r {t['brow_r_real']:.3f}, mouth r {t['mouth_r_real']:.3f}"
              + (f"; seed 7 brow r {s['brow_r_real']:.3f}, mouth r {s['mouth_r_real']:.3f}" if s else ""))


if __name__ == "__main__":
    main()
