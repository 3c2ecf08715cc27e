"""What the VAE alone leaves of each label: the evaluator on real test videos vs on the same videos
after a VAE encode/decode round trip (no generation). The round trip's r bounds what any backbone
working in that latent space can reach.

    python benchmarks/eval_vae_ceiling.py [--weights emo_rt/default_model] [--clips 4]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from emo_rt.eval import metrics
from emo_rt.eval.data import HeldOutData
from emo_rt.eval.evaluator import Evaluator, to_tensor
from emo_rt.models import EmoModel
from emo_rt.pipeline import DEFAULT_MODEL_DIR


def round_trip(model: EmoModel, frames: np.ndarray) -> np.ndarray:
    """uint8 (N, R, R, 3) -> the same frames through the VAE, uint8."""
    with torch.no_grad():
        y = model.decode_latents(model.encode_images(to_tensor(frames))).clamp(-1, 1)
    return ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--data", default="corpus/shards")
    parser.add_argument("--corpus", default="corpus/synth")
    parser.add_argument("--clips", type=int, default=4)
    args = parser.parse_args()
    data, evaluator = HeldOutData(args.data, args.corpus), Evaluator.from_pretrained()
    model = EmoModel.from_pretrained(args.weights)
    labels = ("mouth_open", "brow_raise")
    real, vae = {k: [] for k in labels}, {k: [] for k in labels}
    for entry in list(data.entries("test"))[:args.clips]:
        clip = data.load(entry)
        a, b = evaluator.measure(clip.frames), evaluator.measure(round_trip(model, clip.frames))
        for k in labels:
            real[k].append(metrics.pearson(a[k], clip.truth[k]))
            vae[k].append(metrics.pearson(b[k], clip.truth[k]))
        print(entry.id, "  ".join(f"{k} r real {real[k][-1]:.3f} vae {vae[k][-1]:.3f}" for k in labels))
    print("mean", "  ".join(f"{k} r real {np.mean(real[k]):.3f} vae {np.mean(vae[k]):.3f}" for k in labels))


if __name__ == "__main__":
    main()
