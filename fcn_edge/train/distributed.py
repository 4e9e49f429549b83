"""Distributed data parallel through ``torchrun``: NCCL on GPUs, gloo on CPUs.

``torchrun --nproc_per_node N -m fcn_edge train ...`` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set; each trains on its shard of every epoch, gradients are averaged
by DDP, confusion matrices are summed across ranks before the metrics are computed, and only
rank 0 writes checkpoints and logs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank, the number of ranks, and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: str = "auto") -> Context:
    """Join the process group when launched by torchrun; otherwise a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world == 1:
        return Context(device=dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Context(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                   device=dev)


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sum_across_ranks(array: np.ndarray, ctx: Context) -> np.ndarray:
    """Element-wise sum of ``array`` over all ranks (e.g. confusion matrices)."""
    if not ctx.distributed:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(
        ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def mean_across_ranks(value: float, ctx: Context) -> float:
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64,
                          device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / ctx.world


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()
