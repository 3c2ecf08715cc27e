"""lab (not installed): the latents the shipped Backbone draws for training clips, paired with the
frames they should be. Each window runs the render's own loop (`EmoPipeline.window_latents`, the
model's render.json) but is given the clip's true motion frames, so what it draws stays aligned with
the real video (a free-running render picks its own head path).

    python lab/decoder_own/make_pairs.py MODEL_DIR OUT.safetensors [--clips 120]

Writes latents (N, C, h, w) fp16, frames (N, R, R, 3) uint8 and the clip index of each frame.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from emo_rt.eval.data import HeldOutData
from emo_rt.eval.runner import clip_reference
from emo_rt.pipeline import EmoPipeline, WholeAudio

HOME = Path.home() / "emo-runs"


def to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1


def teacher_forced_latents(pipe: EmoPipeline, clip) -> torch.Tensor:
    """(F, C, h, w): each window drawn by the render loop from the clip's true motion frames."""
    comp, config = pipe.components, pipe.config
    f, n = config.num_frames, config.num_motion_frames
    with torch.no_grad():
        true = comp.encode_images(to_tensor(clip.frames)).float()  # (F, C, h, w)
    motion_features = comp.motion_features
    window = [0]

    def forced(motion: torch.Tensor):  # (1, n, C, h, w) of the render's own frames -> the clip's
        start = window[0] * f
        window[0] += 1
        if start == 0:
            return motion_features(motion)
        return motion_features(true[start - n:start][None].to(motion))

    comp.motion_features = forced
    try:
        audio = WholeAudio(pipe, clip.audio.astype(np.float32), pipe.defaults, torch.device("cpu"))
        with torch.no_grad():
            out = torch.cat(list(pipe.window_latents(clip_reference(clip, 0), audio, pipe.defaults)))
    finally:
        comp.motion_features = motion_features
    return out[: clip.num_frames]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--clips", type=int, default=120)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = EmoPipeline.from_pretrained(args.model)
    entries = []
    for name in ("corpus", "corpus1"):
        data = HeldOutData(HOME / name / "shards", HOME / name / "synth")
        entries += [(data, e) for e in data.entries("train")]
    pick = np.random.default_rng(0).permutation(len(entries))[: args.clips]
    latents, frames, index = [], [], []
    for k, i in enumerate(tqdm(pick)):
        data, entry = entries[i]
        clip = data.load(entry)
        z = teacher_forced_latents(pipe, clip)
        latents.append(z.half())
        frames.append(torch.from_numpy(clip.frames[: len(z)]))
        index.append(torch.full((len(z),), k, dtype=torch.int32))
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    save_file({"latents": torch.cat(latents).contiguous(), "frames": torch.cat(frames).contiguous(),
               "clip": torch.cat(index)}, str(tmp))
    tmp.rename(out)
    print(f"wrote {out}: {sum(len(z) for z in latents)} frames of {len(pick)} clips")


if __name__ == "__main__":
    main()
