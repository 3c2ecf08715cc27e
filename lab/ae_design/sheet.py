"""Round-trip contact sheet of held-out portraits: first row the inputs, then one row per model.

    python lab/ae_design/sheet.py OUT.png --model LABEL=DIR [--model LABEL=emo:DIR ...]

Columns: examples/ref.png (prepared as `emo-rt render` prepares a reference: face-centred crop,
128 px), then one frame of each of several test-split identities of the standard corpus and of
the seed-7 corpus (identities with glasses first). `emo:DIR` takes an emo-rt model directory's VAE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import aelib  # noqa: E402
from evaluate import load_any, round_trip  # noqa: E402

from emo_rt.io.image import load_image, prepare_reference  # noqa: E402

HOME = Path.home() / "emo-runs"
REPO = Path(__file__).resolve().parents[2]


def held_out_portraits(corpus: str, splits, count: int, frame: int = 40) -> tuple[list[np.ndarray], list[str]]:
    """One frame per identity of the splits, identities wearing glasses first."""
    manifest = json.loads((HOME / corpus / "synth/manifest.json").read_text())
    identities = manifest["identities"]
    index = aelib.ShardIndex(HOME / corpus / "shards")
    seen, picks = set(), []
    for clip in index.clips:
        if clip.split in splits and clip.identity not in seen:
            seen.add(clip.identity)
            picks.append(clip)
    picks.sort(key=lambda c: (identities[c.identity]["glasses"] == "none", c.id))
    picks = picks[:count]
    return ([index.read(c, "frames", frame, frame + 1)[0] for c in picks],
            [f"{corpus.replace('corpus', 'seed')[:6] or 'seed0'}:{c.id}" for c in picks])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--model", action="append", required=True, help="LABEL=DIR or LABEL=emo:DIR")
    p.add_argument("--test", type=int, default=5)
    p.add_argument("--seed7", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    ref = prepare_reference(load_image(REPO / "examples/ref.png"), aelib.RESOLUTION).pixels
    a, _ = held_out_portraits("corpus", ("test",), args.test)
    b, _ = held_out_portraits("corpus7", ("train", "val", "test"), args.seed7)
    inputs = np.stack([ref] + a + b)
    rows, labels = [inputs], ["input"]
    for spec in args.model:
        label, path = spec.split("=", 1)
        emo = path.startswith("emo:")
        vae = load_any(path[4:] if emo else path, emo).eval()
        rows.append(round_trip(vae, inputs))
        labels.append(label)
    margin, side = 20, aelib.RESOLUTION
    sheet = np.full((len(rows) * (side + margin), len(inputs) * side, 3), 255, np.uint8)
    for r, (row, label) in enumerate(zip(rows, labels)):
        y = r * (side + margin)
        cv2.putText(sheet, label, (4, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for c, tile in enumerate(row):
            sheet[y + margin:y + margin + side, c * side:(c + 1) * side] = tile
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out}: columns examples/ref.png, {len(a)} test-split and {len(b)} seed-7 identities")


if __name__ == "__main__":
    main()
