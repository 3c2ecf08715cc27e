"""Probe: each window's starting noise partly shared across frames and windows, to calm the flicker
of the 1-step render (1.009 grey levels against the 1.0 target, where 2 steps read 0.935).

The start noise of frame i becomes sqrt(1 - m) * iid_i + sqrt(m) * shared, where `shared` is one
(1, C, 1, h, w) map drawn once (seed 0) for every frame of every window: still unit variance per
element, but correlated over time by m. Runs `emo-rt eval` with the patch in place:

    python lab/probes/noise/shared_noise.py MIX -- eval --data ... --out REPORT [--steps 1 ...]
"""

from __future__ import annotations

import math
import sys

import torch

import emo_rt.pipeline as pipeline
from emo_rt.cli import main

mix = float(sys.argv[1])
assert sys.argv[2] == "--", "usage: shared_noise.py MIX -- emo-rt arguments"
original = pipeline.first_latents
shared = {}


def first_latents(scheduler, noise, reference_latents):
    key = tuple(noise.shape[:2] + noise.shape[3:])
    if key not in shared:
        shared[key] = torch.randn(noise.shape[0], noise.shape[1], 1, *noise.shape[3:],
                                  generator=torch.Generator().manual_seed(0)).to(noise)
    mixed = math.sqrt(1 - mix) * noise + math.sqrt(mix) * shared[key].expand_as(noise)
    return original(scheduler, mixed, reference_latents)


pipeline.first_latents = first_latents
sys.exit(main(sys.argv[3:]))
