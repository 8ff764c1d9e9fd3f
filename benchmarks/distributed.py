"""Data parallelism under `torchrun`: one process per device, each computing its share of the same global batch.

Launch any `nndiff fit` with `torchrun --nproc-per-node N $(which nndiff) fit ...`; torchrun sets WORLD_SIZE,
RANK and LOCAL_RANK. Without them everything here is a no-op (world of one). Rank 0 alone writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's rows of a global batch of n (n divisible by the world size)."""
        if n % self.size:
            raise ValueError(f"a global batch of {n} does not split over {self.size} processes; choose a multiple")
        per = n // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def mean(self, value: float) -> float:
        """The average of a scalar over ranks (for logging)."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return t.item() / self.size

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: torch.device) -> torch.device:
    """Under torchrun on GPUs, each process takes the GPU of its LOCAL_RANK."""
    if launched() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def init(device: torch.device) -> World:
    """Join the process group torchrun set up (NCCL on GPUs, Gloo on CPUs); a world of one otherwise."""
    if not launched():
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())
