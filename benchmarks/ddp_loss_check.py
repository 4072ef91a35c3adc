"""Two DDP ranks (NCCL on two GPUs, or gloo on the CPU) against one process: our losses' gradients.

Each loss whose normalisation counts something that differs between ranks (labelled (sample, channel) pairs,
patches with a centre, non-ignored voxels) is evaluated on a global batch of 4 split 2 + 2, through a 1x1(x1)
convolution wrapped in DistributedDataParallel; the averaged gradient of its weight is compared with the gradient of
one process on the whole batch. ``benchmarks/device_check.py`` runs it when two or more GPUs are present;
``tests/test_ddp_trainers.py`` checks the same on the CPU through the trainers themselves.

Run alone: ``python benchmarks/ddp_loss_check.py [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from typing import Callable, Dict, Tuple

import torch
import torch.multiprocessing as mp
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nnunet_transfer.losses.centre_regression import CentreRegressionLoss
from nnunet_transfer.losses.hec import KITS21_HEC_WEIGHTS, hec_bce
from nnunet_transfer.losses.mleam_edge import mleam_edge_loss
from nnunet_transfer.losses.partial_label import PartialLabelDiceBCELoss

WORLD = 2
GLOBAL_BATCH = 4
SHAPE = (8, 16, 16)
#: MOTS-like: 11 region channels of 7 tasks; samples of tasks 0, 1 (2 channels each) on rank 0, 4, 5 (1 each) on 1
CHANNEL_TASK = [0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6]
TASKS = [0, 1, 4, 5]


def _batch(device: torch.device) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(GLOBAL_BATCH, 1, *SHAPE, generator=g)
    regions = (torch.rand(GLOBAL_BATCH, len(CHANNEL_TASK), *SHAPE, generator=g) > 0.7).float()
    labels = torch.randint(0, 4, (GLOBAL_BATCH, 1, *SHAPE), generator=g)
    labels[2:, :, :2] = 4  # ignore label, on rank 1 only
    centre = torch.zeros(GLOBAL_BATCH, 1, *SHAPE)
    for i in (0, 1, 3):  # rank 0: two patches with a centre, rank 1: one
        centre[i, :, 2:5, 3 + 2 * i:9, 4:10] = 1
    return {k: v.to(device) for k, v in dict(x=x, regions=regions, labels=labels, centre=centre).items()}


def _losses() -> Dict[str, Tuple[int, Callable]]:
    """name -> (output channels of the 1x1 conv, loss(output, batch part, tasks))."""
    def partial(batch_dice):
        def f(out, b, tasks):
            loss = PartialLabelDiceBCELoss(CHANNEL_TASK, batch_dice=batch_dice, ddp=dist.is_initialized())
            loss.task_ids = tasks
            return loss(out, b["regions"])
        return f

    def centre(out, b, tasks):
        return CentreRegressionLoss()(torch.sigmoid(out.mean(dim=(2, 3, 4))), b["centre"])

    def hec(out, b, tasks):
        return sum(w * hec_bce(out, b["labels"], labels, ignore_label=4) for labels, w in KITS21_HEC_WEIGHTS.values())

    def edges(out, b, tasks):
        return mleam_edge_loss([out], [b["labels"].clamp_max(3)], weights=(1.0,))

    return {"partial-label, batch Dice": (len(CHANNEL_TASK), partial(True)),
            "partial-label, per-pair Dice": (len(CHANNEL_TASK), partial(False)),
            "centre regression": (3, centre), "HEC BCE, ignore label": (4, hec), "MLEAM edge MSE": (1, edges)}


def _gradient(name: str, device: torch.device, part: slice) -> torch.Tensor:
    channels, loss = _losses()[name]
    torch.manual_seed(1)
    net = nn.Conv3d(1, channels, 1).to(device)
    model = net
    if dist.is_initialized():
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    batch = {k: v[part] for k, v in _batch(device).items()}
    loss(model(batch["x"]), batch, torch.tensor(TASKS, device=device)[part]).backward()
    return net.weight.grad.detach().cpu()


def _rank(rank: int, device_type: str, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=WORLD)
    try:
        part = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
        # numpy, not tensors: a tensor in a queue is shared memory that dies with this process
        queue.put((rank, {name: _gradient(name, device, part).numpy() for name in _losses()}))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_rank_check(device_type: str = "cuda") -> dict:
    """Max relative gradient error (L2) of every loss, 2 ranks vs one process; raises when fewer than two GPUs."""
    if device_type == "cuda" and torch.cuda.device_count() < WORLD:
        raise RuntimeError(f"{torch.cuda.device_count()} GPU(s): the 2-rank NCCL check needs two")
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_rank, args=(r, device_type, port, queue)) for r in range(WORLD)]
    for p in processes:
        p.start()
    grads = dict(queue.get(timeout=300) for _ in range(WORLD))
    for p in processes:
        p.join(timeout=60)
    device = torch.device("cuda", 0) if device_type == "cuda" else torch.device("cpu")
    errors = {}
    for name in _losses():
        reference = _gradient(name, device, slice(0, GLOBAL_BATCH))
        errors[name] = max(float((torch.from_numpy(grads[r][name]) - reference).norm() / reference.norm())
                           for r in range(WORLD))
    return {"backend": "nccl" if device_type == "cuda" else "gloo", "ranks": WORLD, "global_batch": GLOBAL_BATCH,
            "max_relative_gradient_error": errors, "max": max(errors.values())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    print(json.dumps(two_rank_check(parser.parse_args().device), indent=1))
