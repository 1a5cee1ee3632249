"""Process-group setup: one code path for single-process CPU/GPU and torchrun DDP.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them the run is a
world of one and nothing distributed is initialised. NCCL is used on CUDA, gloo otherwise
(so DDP is testable on CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from ipv2.core.devices import resolve_device


@dataclass
class DistContext:
    """This process's place in the run."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str) -> DistContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local)
        if world > 1 and not torch_dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            torch_dist.init_process_group(backend=backend)
        return cls(rank, world, local, dev)

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def any_true(self, flag: bool) -> bool:
        """True on every rank when any rank says so (stop requests, budgets)."""
        if self.world == 1:
            return flag
        backend_cpu = torch_dist.get_backend() == "gloo"
        t = torch.tensor([1.0 if flag else 0.0], device="cpu" if backend_cpu else self.device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def close(self) -> None:
        if self.world > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
