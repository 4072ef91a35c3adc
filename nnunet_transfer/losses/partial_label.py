"""Partial-label loss: sigmoid BCE + soft Dice on exactly the channels a sample's source dataset labels.

In MOTS every scan is annotated for one task only: a KiTS19 scan says nothing about the liver, so its liver
channels must get no gradient at all (not "liver = background"). The loss therefore takes a (N, C) mask of labelled
(sample, channel) pairs, derived from each sample's task id, and ignores everything else:

* BCE: mean over the voxels of labelled (sample, channel) pairs only.
* Soft Dice: per channel over the labelled samples of the batch (``batch_dice``, as nnU-Net's plans usually say for
  3d_fullres) or per labelled (sample, channel) pair; channels without any labelled sample are left out of the mean.

Under DDP every term is that of the global batch: the batch-Dice statistics are gathered across ranks with
nnU-Net's ``AllGatherGrad``, and the BCE and the per-pair Dice divide by the number of labelled pairs of all ranks
(:func:`~nnunet_transfer.utils.distributed.global_mean`), so DDP's averaged gradient is the one of a single process
on the whole batch even when the ranks hold different numbers of labelled pairs.

Outputs are logits in nnU-Net region order; targets are nnU-Net's region targets (N, C, *spatial) of 0/1 values,
as its data pipeline produces them for region-based training.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_transfer.utils.distributed import global_mean


class PartialLabelDiceBCELoss(nn.Module):
    """BCE + soft Dice restricted to labelled (sample, channel) pairs.

    ``channel_task[c]`` is the task that labels output channel ``c``. Set :attr:`task_ids` ((N,) long tensor)
    before calling; when it is None every channel counts as labelled (fully annotated data).
    """

    def __init__(self, channel_task: Sequence[int], batch_dice: bool = True, smooth: float = 1e-5,
                 weight_bce: float = 1.0, weight_dice: float = 1.0, ddp: bool = False):
        super().__init__()
        self.register_buffer("channel_task", torch.as_tensor(list(channel_task), dtype=torch.long), persistent=False)
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.weight_bce = weight_bce
        self.weight_dice = weight_dice
        self.ddp = ddp
        self.task_ids: Optional[torch.Tensor] = None

    def labelled_mask(self, n: int, device: torch.device) -> torch.Tensor:
        """(N, C) float mask: 1 where the sample's task labels the channel."""
        if self.task_ids is None:
            return torch.ones((n, self.channel_task.numel()), device=device)
        if tuple(self.task_ids.shape) != (n,):
            raise ValueError(f"task_ids must have shape ({n},), got {tuple(self.task_ids.shape)}")
        return (self.channel_task.to(device)[None, :] == self.task_ids.to(device)[:, None]).float()

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.shape != target.shape:
            raise ValueError(f"output {tuple(output.shape)} and region target {tuple(target.shape)} differ; the "
                             "dataset must be region-based with one region per output channel")
        n, c = output.shape[:2]
        mask = self.labelled_mask(n, output.device)  # (N, C)
        target = target.float()
        spatial = tuple(range(2, output.ndim))
        voxels = output[0, 0].numel()

        # BCE averaged over labelled voxels only; unlabelled pairs contribute exactly zero (and zero gradient)
        bce_map = F.binary_cross_entropy_with_logits(output.float(), target, reduction="none")
        bce_per_pair = bce_map.sum(spatial)  # (N, C)
        bce = global_mean((bce_per_pair * mask).sum(), mask.sum() * voxels)

        prob = torch.sigmoid(output.float())
        tp = (prob * target).sum(spatial)
        fp = (prob.sum(spatial) - tp) * mask
        fn = (target.sum(spatial) - tp) * mask
        tp = tp * mask
        if self.batch_dice:
            tp, fp, fn, counted = tp.sum(0), fp.sum(0), fn.sum(0), mask.sum(0)  # (C,)
            if self.ddp:
                # ranks may hold different batch sizes: reduce locally first, then gather the (C,) statistics; the
                # Dice is then the global one on every rank and AllGatherGrad returns each rank its global gradient
                from nnunetv2.utilities.ddp_allgather import AllGatherGrad

                tp, fp, fn, counted = (AllGatherGrad.apply(v).sum(0) for v in (tp, fp, fn, counted))
            dice = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth).clamp_min(1e-8)
            present = (counted > 0).float()
            soft_dice = (dice * present).sum() / present.sum().clamp_min(1.0)
        else:
            # mean over the labelled (sample, channel) pairs of all ranks
            dice = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth).clamp_min(1e-8)
            soft_dice = global_mean((dice * mask).sum(), mask.sum())

        return self.weight_bce * bce - self.weight_dice * soft_dice
