"""Reductions of our losses and metrics that give the same result on one process and under DDP.

nnU-Net trains on several GPUs with torch's ``DistributedDataParallel``: each rank computes a loss on its part of the
global batch and DDP *averages* the parameter gradients over the ranks. A loss that divides by a count of its own
rank (labelled pairs, patches with a centre, non-ignored voxels) is then wrong whenever the ranks' counts differ:
the mean of per-rank means is not the mean over the global batch.

:func:`global_mean` is the one place that fixes this: it divides a rank's *sum* by the count summed over all ranks
and multiplies by the world size, so that DDP's averaging yields exactly the gradient of the global mean, and the
mean of the per-rank values (what nnU-Net logs) is the global mean itself. Without an initialised process group it
is the plain ``sum / count``, so one process is unchanged.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import distributed as dist

__all__ = ["is_distributed", "world_size", "global_count", "global_mean"]


def is_distributed() -> bool:
    """True inside an initialised torch.distributed process group (DDP training)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def global_count(count: Union[torch.Tensor, float], like: torch.Tensor) -> torch.Tensor:
    """``count`` summed over all ranks, as a detached float tensor on ``like``'s device (every rank must call this,
    in the same order: it is a collective)."""
    total = torch.as_tensor(count, dtype=torch.float64, device=like.device).detach().clone()
    if is_distributed():
        dist.all_reduce(total)
    return total


def global_mean(total: torch.Tensor, count: Union[torch.Tensor, float]) -> torch.Tensor:
    """This rank's share of ``sum over all ranks of total / sum over all ranks of count``.

    Returns ``world_size * total / global count`` (``total / count`` on one process); a global count of 0 counts
    as 1, so an empty selection gives a zero that keeps the graph. DDP averages the gradients of the per-rank
    values, so the gradient is that of the global mean; the mean of the per-rank values is the global mean.
    """
    denominator = global_count(count, total).clamp_min(1.0)
    return total * (world_size() / denominator).to(total.dtype)
