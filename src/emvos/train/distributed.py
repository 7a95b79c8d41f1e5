"""Data-parallel training across processes started by ``torchrun`` (NCCL on GPUs, gloo on CPUs).

``torchrun --nproc_per_node N -m emvos train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
without them training runs in one process and every collective here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

#: How long processes wait for each other (rank 0 validates while the others wait at a barrier).
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    """This process's place among the training processes.

    Attributes:
        rank: global rank (0 logs, validates and saves).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: where collectives' tensors live (the GPU for NCCL, the CPU for gloo).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process."""
        if self.world_size > 1:
            dist.barrier()

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        """Every process's ``tensor`` (same shape and dtype everywhere), in rank order."""
        if self.world_size == 1:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return parts

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over all processes."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


@contextmanager
def distributed(device: str) -> Iterator[DistContext]:
    """Join the process group ``torchrun`` describes (if any) for the duration of the block.

    Args:
        device: the configured device; ``cpu`` (or ``auto`` without CUDA) selects gloo, else NCCL
            with one GPU per local rank.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield DistContext()
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    try:
        yield DistContext(rank, world_size, local_rank,
                          torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"))
    finally:
        dist.destroy_process_group()
