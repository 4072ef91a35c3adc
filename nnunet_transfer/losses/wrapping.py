"""Putting our loss where nnU-Net's goes, keeping nnU-Net's deep-supervision wrapper and its weights."""

from __future__ import annotations

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from torch import nn


def with_base_loss(nnunet_loss: nn.Module, base: nn.Module) -> nn.Module:
    """``nnunet_loss`` as built by ``nnUNetTrainer._build_loss`` with its per-scale loss replaced by ``base``."""
    if isinstance(nnunet_loss, DeepSupervisionWrapper):
        nnunet_loss.loss = base
        return nnunet_loss
    return base
