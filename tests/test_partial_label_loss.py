"""Partial-label loss: only labelled channels are scored (its DDP reductions: tests/test_ddp_trainers.py)."""


import pytest
import torch
import torch.nn.functional as F

from nnunet_transfer.data import mots_tasks
from nnunet_transfer.losses.partial_label import PartialLabelDiceBCELoss

CHANNEL_TASK = [ch.task for ch in mots_tasks.OUTPUT_CHANNELS]


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    output = torch.randn(n, len(CHANNEL_TASK), 4, 6, 6, generator=g)
    target = (torch.rand(n, len(CHANNEL_TASK), 4, 6, 6, generator=g) > 0.7).float()
    tasks = torch.tensor([0, 1, 4, 6, 2, 3, 5, 0][:n])
    return output, target, tasks


@pytest.mark.parametrize("batch_dice", [True, False])
def test_no_gradient_reaches_unlabelled_channels(batch_dice):
    output, target, tasks = _batch()
    output.requires_grad_(True)
    loss = PartialLabelDiceBCELoss(CHANNEL_TASK, batch_dice=batch_dice)
    loss.task_ids = tasks
    loss(output, target).backward()
    labelled = torch.tensor(mots_tasks.channel_task_matrix())[tasks]  # (N, C)
    grad_per_pair = output.grad.abs().flatten(2).sum(-1)
    assert torch.all(grad_per_pair[~labelled] == 0)
    assert torch.all(grad_per_pair[labelled] > 0)


def test_unlabelled_channels_do_not_change_the_loss():
    output, target, tasks = _batch()
    loss = PartialLabelDiceBCELoss(CHANNEL_TASK)
    loss.task_ids = tasks
    base = loss(output, target)
    labelled = torch.tensor(mots_tasks.channel_task_matrix())[tasks]
    garbage_out, garbage_tgt = output.clone(), target.clone()
    garbage_out[~labelled] = 1e3
    garbage_tgt[~labelled] = 1.0
    torch.testing.assert_close(loss(garbage_out, garbage_tgt), base)


def test_matches_hand_computation_for_one_labelled_channel():
    output, target, _ = _batch(n=1)
    loss = PartialLabelDiceBCELoss(CHANNEL_TASK, batch_dice=True, smooth=0.0)
    loss.task_ids = torch.tensor([4])  # colon: only the colon tumour channel is labelled
    c = next(ch.index for ch in mots_tasks.OUTPUT_CHANNELS if ch.task == 4)
    p = torch.sigmoid(output[0, c])
    t = target[0, c]
    bce = F.binary_cross_entropy_with_logits(output[0, c], t)
    dice = 2 * (p * t).sum() / (p.sum() + t.sum())
    torch.testing.assert_close(loss(output, target), bce - dice)


def test_without_task_ids_every_channel_counts():
    output, target, _ = _batch()
    loss = PartialLabelDiceBCELoss(CHANNEL_TASK, batch_dice=False, smooth=1e-5)
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    nnunet = DC_and_BCE_loss({}, {"batch_dice": False, "do_bg": True, "smooth": 1e-5, "ddp": False},
                             dice_class=MemoryEfficientSoftDiceLoss)
    torch.testing.assert_close(loss(output, target), nnunet(output, target), rtol=1e-4, atol=1e-5)
