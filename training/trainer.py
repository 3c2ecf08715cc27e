"""`emo-rt train`: one stage of a recipe, resumable, DDP under torchrun.

`train(recipe_path, stage, data_dirs, out_dir, resume)` checks everything it needs first (plan.py:
recipe, data, the previous stage's model, existing checkpoints) and fails with one `EmoError` line
before any work; then it trains (loop.py) and returns the stage's output model directory.

Launch: `emo-rt train ...`, or `torchrun --nproc_per_node N -m emo_rt.training.trainer ...` with the
same arguments (gloo on CPU, nccl on GPUs). A recipe's batch_size is the global batch: each of N
processes takes batch_size / N of it, so any N trains the same samples in the same order.
"""

from __future__ import annotations

import sys
from pathlib import Path

from emo_rt.training.distributed import Distributed
from emo_rt.training.loop import Trainer
from emo_rt.training.plan import plan


def train(recipe_path: str | Path, stage: int, data_dirs, out_dir: str | Path, resume: bool = False,
          progress: bool = True) -> Path:
    """Train one stage on one or more shard folders; returns its output model directory (OUT/stage{k}/model)."""
    checked = plan(recipe_path, stage, data_dirs, out_dir, resume)
    dist = Distributed.from_env()
    try:
        return Trainer(checked, dist, progress).run()
    finally:
        dist.close()


if __name__ == "__main__":  # torchrun -m emo_rt.training.trainer: the `emo-rt train` command
    from emo_rt.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
