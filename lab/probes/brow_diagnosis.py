"""Look at what the model draws where the brows are: real frames of a held-out clip (top row) above
the model's render of the same audio (bottom row), with the reference taken from a frame whose brows
are raised, and the true brow raise of each shown frame printed.

    python benchmarks/brow_diagnosis.py [--weights DIR] [--clip 4] [--reference-frame 12] \
        [--frames 0 12 20 40 52 60] [--split test] [--out docs/img/brow_diagnosis.png]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from emo_rt.eval.data import HeldOutData
from emo_rt.eval.runner import clip_reference
from emo_rt.pipeline import EmoPipeline, RenderSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--data", default="corpus/shards")
    parser.add_argument("--corpus", default="corpus/synth")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--clip", type=int, default=4, help="index into the split (test 4: c00112)")
    parser.add_argument("--reference-frame", type=int, default=12)
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 12, 20, 40, 52, 60])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cfg", type=float, default=3.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/img/brow_diagnosis.png")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = HeldOutData(args.data, args.corpus)
    clip = data.load(list(data.entries(args.split))[args.clip])
    length = max(args.frames) + 1
    samples_per_frame = clip.audio.size // clip.num_frames
    pipe = EmoPipeline.from_pretrained(args.weights)
    audio = clip.audio[: length * samples_per_frame].astype(np.float32)
    settings = RenderSettings(steps=args.steps, cfg=args.cfg)
    rendered = np.concatenate(list(pipe(clip_reference(clip, args.reference_frame), audio, settings)))
    real = np.concatenate([clip.frames[k] for k in args.frames], axis=1)  # (R, k*R, 3)
    fake = np.concatenate([rendered[k] for k in args.frames], axis=1)
    Image.fromarray(np.concatenate([real, fake], axis=0)).save(args.out, optimize=True)
    raise_ = ", ".join(f"{k}: {clip.truth['brow_raise'][k]:.2f}" for k in args.frames)
    print(f"{clip.id}, reference frame {args.reference_frame}; true brow raise by frame: {raise_}; wrote {args.out}")


if __name__ == "__main__":
    main()
