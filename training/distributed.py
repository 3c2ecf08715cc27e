"""Process group of a training run under torchrun (gloo on CPU, nccl on GPUs), or one process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_env(cls) -> "Distributed":
        """From torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, ...); one process without it."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        if world > 1 and not torch_dist.is_initialized():
            torch_dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
        return cls(rank=int(os.environ.get("RANK", "0")), world_size=world, local_rank=local_rank,
                   local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))), device=device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share_cores(self) -> None:
        """On CPU, each of the node's processes takes its share of torch's threads (unless
        OMP_NUM_THREADS says otherwise)."""
        if self.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, torch.get_num_threads() // self.local_world_size))

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP around `module` with more than one process; `module` itself otherwise."""
        if self.world_size == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)  # buffers are constants

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return value
        value = value.detach().clone()
        torch_dist.all_reduce(value)
        return value / self.world_size

    def close(self) -> None:
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
