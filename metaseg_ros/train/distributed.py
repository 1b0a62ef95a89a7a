"""Process group set-up for torchrun (env:// rendezvous) and the step-indexed data order.

`torchrun --nproc_per_node=N [--nnodes=M ...] -m metaseg_ros.cli.train ...` sets RANK,
WORLD_SIZE and LOCAL_RANK; one process is also fine (no process group then).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (logs, progress bar, checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Read torchrun's environment, pick the device, init the process group if needed.

    Backend: nccl on CUDA, gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device {device!r} must be auto, cpu or cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank, world_size, local_rank, torch_device)


def cleanup_distributed() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class StepSampler(Sampler):
    """Infinite, resumable sample order: which samples each process reads at each step.

    Global sample position p of (step s, micro-step m, rank r, slot i) is
    s * P + (m * world + r) * batch + i with P = world * batch * accumulation; position p
    reads dataset key (perm_e[p % N], e) with e = p // N and perm_e a permutation seeded
    by (seed, e). Ranks thus read disjoint samples (like DistributedSampler with
    set_epoch), and the order is a pure function of the step, so resuming at a step
    continues exactly where the run stopped.
    """

    def __init__(self, dataset_size: int, batch_size: int, grad_accum_steps: int, rank: int,
                 world_size: int, seed: int, start_step: int = 0) -> None:
        if dataset_size < 1:
            raise ValueError("empty dataset")
        self.dataset_size = int(dataset_size)
        self.batch_size = int(batch_size)
        self.grad_accum_steps = int(grad_accum_steps)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.seed = int(seed)
        self.start_step = int(start_step)
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    @property
    def samples_per_step(self) -> int:
        """Samples read by all processes together in one optimizer step."""
        return self.world_size * self.batch_size * self.grad_accum_steps

    def positions(self, step: int, micro_step: int) -> list[int]:
        """Global sample positions of this rank's micro-batch."""
        first = (step * self.samples_per_step
                 + (micro_step * self.world_size + self.rank) * self.batch_size)
        return list(range(first, first + self.batch_size))

    def key(self, position: int) -> tuple[int, int]:
        """(sample index, epoch) read at a global position."""
        epoch, offset = divmod(position, self.dataset_size)
        if epoch != self._perm_epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.dataset_size, generator=generator)
            self._perm_epoch = epoch
        return int(self._perm[offset]), epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        while True:
            for micro_step in range(self.grad_accum_steps):
                for position in self.positions(step, micro_step):
                    yield self.key(position)
            step += 1
