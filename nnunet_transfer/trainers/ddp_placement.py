"""Where a DDP rank of our trainers runs, and how its network is wrapped there.

nnU-Net 2.8 runs DDP on the GPUs of one machine (``nnUNetv2_train -num_gpus N``): rank ``r`` trains on ``cuda:r``
and ``nnUNetTrainer.initialize`` wraps the network in ``DistributedDataParallel(device_ids=[r])``. Two set-ups
need more:

* several nodes (``torchrun``, see :mod:`nnunet_transfer.train_ddp`): the global rank is not a GPU index of the
  node; the rank's GPU is ``cuda:LOCAL_RANK``;
* CPU processes (gloo backend, ``-device cpu``): torch refuses ``device_ids`` for a module on the CPU.

:func:`ddp_device` picks the rank's device; :func:`initialize_with_ddp_on` runs nnU-Net's own ``initialize``
unchanged whenever nnU-Net's wrap is right (every single-node GPU run). Otherwise it runs nnU-Net's ``initialize``
as for one process and then applies the per-rank steps of nnU-Net's DDP branch, by nnU-Net's own methods where it
has them: the per-rank batch size and foreground oversampling (``_set_batch_size_and_oversample``), SyncBatchNorm
(GPU only: torch's SyncBatchNorm does not run on the CPU, so CPU ranks keep per-rank BatchNorm statistics), the DDP
wrap on the rank's device, and the loss built for DDP (``_build_loss`` with ``is_ddp`` set).
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["node_local_rank", "ddp_device", "initialize_with_ddp_on"]


def node_local_rank() -> int:
    """This process's index on its node: ``LOCAL_RANK`` (set by torchrun), else the global rank (one node)."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None else dist.get_rank()


def ddp_device(requested: torch.device) -> torch.device:
    """The device of this DDP rank: the node-local GPU when ``requested`` is CUDA, else ``requested``'s type."""
    if requested.type == "cuda":
        return torch.device("cuda", node_local_rank())
    return torch.device(requested.type)


def initialize_with_ddp_on(trainer, nnunet_initialize: Callable[[], None]) -> None:
    """Run ``nnunet_initialize`` (nnU-Net's ``initialize`` of ``trainer``, a DDP rank) so that the network ends up
    wrapped in DDP on ``trainer.device``."""
    device = trainer.device
    if device.type == "cuda" and device.index == trainer.local_rank:
        nnunet_initialize()  # nnU-Net's own wrap, device_ids=[rank], is this rank's GPU
        return
    trainer.is_ddp = False  # nnU-Net's initialize without its GPU-index wrap ...
    try:
        nnunet_initialize()
    finally:
        trainer.is_ddp = True
    # ... then the per-rank steps of its DDP branch
    trainer._set_batch_size_and_oversample()
    network = trainer.network
    if device.type == "cuda":
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    trainer.network = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    trainer.loss = trainer._build_loss()
