"""Putting our loss where nnU-Net's goes, keeping nnU-Net's deep-supervision wrapper and its weights."""

from __future__ import annotations

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn


def soft_dice_kwargs(trainer) -> dict:
    """The soft-Dice settings ``nnUNetTrainer._build_loss`` gives ``DC_and_CE_loss`` for ``trainer`` (label
    datasets); build a Dice + CE loss with these, ``ignore_label=trainer.label_manager.ignore_label`` and
    :data:`DICE_CLASS` to get nnU-Net's own term with weights of ours."""
    return {"batch_dice": trainer.configuration_manager.batch_dice, "smooth": 1e-5, "do_bg": False,
            "ddp": trainer.is_ddp}


#: the Dice implementation ``nnUNetTrainer._build_loss`` uses
DICE_CLASS = MemoryEfficientSoftDiceLoss


def with_base_loss(nnunet_loss: nn.Module, base: nn.Module) -> nn.Module:
    """``nnunet_loss`` as built by ``nnUNetTrainer._build_loss`` with its per-scale loss replaced by ``base``."""
    if isinstance(nnunet_loss, DeepSupervisionWrapper):
        nnunet_loss.loss = base
        return nnunet_loss
    return base
