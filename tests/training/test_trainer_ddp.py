"""torchrun --nproc_per_node 2 on CPU (gloo): ranks stay identical, and their averaged gradients
equal one process's gradients on the combined batch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch

from emo_rt.training.distributed import Distributed
from emo_rt.training.logs import read_losses
from emo_rt.training.loop import Trainer
from emo_rt.training.plan import plan, stage_paths
from tests.training.toy_data import toy_recipe, write_recipe

WORKER = '''
import sys, torch
from emo_rt.training.distributed import Distributed
from emo_rt.training.loop import Trainer
from emo_rt.training.plan import plan
recipe, data, out, record = sys.argv[1:5]
checked = plan(recipe, 1, data, out, resume=False)
dist = Distributed.from_env()
grads = {}
def on_backward(step, model):
    if step == 0:
        grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
trainer = Trainer(checked, dist, progress=False, on_backward=on_backward)
trainer.run()
params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
torch.save({"grads": grads, "params": params}, f"{record}/rank{dist.rank}.pt")
dist.close()
'''


def test_two_ranks_match_one_process_on_the_combined_batch(toy, new_run, tmp_path):
    steps = 2
    # two processes with half of the global batch of 2 each
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    ddp_run = new_run(tmp_path / "ddp")
    recipe_ddp = write_recipe(tmp_path / "ddp.yaml", toy_recipe(steps=steps, batch_size=2))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
         str(recipe_ddp), str(toy["data"]), str(ddp_run), str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)

    # one process with the whole batch
    single_run = new_run(tmp_path / "single")
    recipe_single = write_recipe(tmp_path / "single.yaml", toy_recipe(steps=steps, batch_size=2))
    grads = {}

    def on_backward(step, model):
        if step == 0:
            grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    Trainer(plan(recipe_single, 1, toy["data"], single_run, resume=False), Distributed(), progress=False,
            on_backward=on_backward).run()

    # the ranks hold bitwise the same parameters after the steps, and had the same gradients
    assert rank0["params"].keys() == rank1["params"].keys()
    for name in rank0["params"]:
        assert torch.equal(rank0["params"][name], rank1["params"][name]), name
    assert rank0["grads"].keys() == rank1["grads"].keys() == grads.keys() and len(grads) > 100
    for name in grads:
        assert torch.equal(rank0["grads"][name], rank1["grads"][name]), name
        torch.testing.assert_close(rank0["grads"][name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # the logged loss (mean over ranks) equals the single process's at every step
    _, ddp_loss = read_losses(stage_paths(ddp_run, 1).log)
    _, single_loss = read_losses(stage_paths(single_run, 1).log)
    np.testing.assert_allclose(ddp_loss, single_loss, rtol=1e-5)
