"""Phase 2 of localisation pretraining (paper localization-pretraining) as an nnU-Net trainer: the pretrained encoder
stays fixed (parameters and normalisation statistics), the decoder trains with soft Dice and Adam."""

from __future__ import annotations

from typing import List

import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from torch import nn

from nnunet_transfer.architectures.localization_unet import describe_encoder
from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.losses.log_dice import NegativeLogSoftDice
from nnunet_transfer.losses.wrapping import DICE_CLASS, soft_dice_kwargs, with_base_loss
from nnunet_transfer.trainers.finetune import FineTuneTrainer
from nnunet_transfer.utils.modules import unwrap_network


class FrozenEncoderTrainer(FineTuneTrainer):
    """Encoder frozen for the whole run; soft Dice only; Adam (paper: phase 2 of localisation pretraining).

    The network is the plans' (``nnunet-transfer plan-arch -a localization-paper`` for the paper's U-Net); the
    training log names its encoder at the start. The loss is nnU-Net's negative soft Dice; ``log_dice = True`` (:class:`FrozenEncoderTrainer_logDice`) uses
    the paper's negative log soft Dice instead.
    """

    freeze_encoder = True
    #: minimise -log(soft Dice) (the paper) instead of -soft Dice (nnU-Net's Dice term)
    log_dice: bool = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-3

    def initialize(self) -> None:
        super().initialize()
        self.print_to_log_file("Frozen " + describe_encoder(unwrap_network(self.network),
                                                            self.configuration_manager.network_arch_class_name))

    def make_optimizer(self, param_groups: List[dict]) -> torch.optim.Optimizer:
        return torch.optim.Adam(param_groups, lr=self.initial_lr, weight_decay=self.weight_decay)

    def _build_loss(self) -> nn.Module:
        """nnU-Net's loss (deep-supervision wrapper and weights included) around its Dice + CE built with
        ``weight_ce=0`` (nnU-Net skips the CE term at weight 0: soft Dice only), as ``_build_loss`` configures it."""
        if self.label_manager.has_regions:
            raise InvalidValueError(
                f"{type(self).__name__} trains soft Dice on plain labels; this dataset.json defines "
                "regions")
        dice_only = DC_and_CE_loss(soft_dice_kwargs(self), {}, weight_ce=0, weight_dice=1,
                                   ignore_label=self.label_manager.ignore_label, dice_class=DICE_CLASS)
        if self._do_i_compile():
            dice_only.dc = torch.compile(dice_only.dc)
        base = NegativeLogSoftDice(dice_only) if self.log_dice else dice_only
        return with_base_loss(super()._build_loss(), base)


class FrozenEncoderTrainer_logDice(FrozenEncoderTrainer):
    """:class:`FrozenEncoderTrainer` with the paper's loss, the negative log soft Dice."""

    log_dice = True
