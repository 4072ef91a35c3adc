"""Small helpers for the network object nnU-Net hands around (possibly DDP-wrapped and/or compiled)."""

from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel


def unwrap_network(network: nn.Module) -> nn.Module:
    """The plain module behind nnU-Net's DDP and torch.compile wrappers (as nnU-Net's own checkpointing does)."""
    module = network.module if isinstance(network, DistributedDataParallel) else network
    return getattr(module, "_orig_mod", module)
