"""Negative log soft Dice, the loss of the localisation paper's phase 2 (instead of nnU-Net's negative Dice)."""

from __future__ import annotations

import torch
from torch import nn

#: soft Dice below this is clamped before the logarithm (an empty prediction early in training)
MIN_DICE = 1e-6


class NegativeLogSoftDice(nn.Module):
    """``-log(soft Dice)`` from a loss that returns ``-soft Dice`` (nnU-Net's compound loss at ``weight_ce = 0``,
    i.e. its ``MemoryEfficientSoftDiceLoss`` with nnU-Net's batch/foreground settings)."""

    def __init__(self, negative_dice_loss: nn.Module):
        super().__init__()
        self.negative_dice_loss = negative_dice_loss

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = -self.negative_dice_loss(output, target)
        return -torch.log(torch.clamp(dice, min=MIN_DICE))
