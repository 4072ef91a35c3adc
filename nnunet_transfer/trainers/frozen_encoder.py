"""Phase 2 of localisation pretraining (paper localization-pretraining) as an nnU-Net trainer: the pretrained encoder
stays fixed (parameters and normalisation statistics), the decoder trains with soft Dice and Adam."""

from __future__ import annotations

from typing import List

import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from torch import nn

from nnunet_transfer.architectures.localization_unet import describe_encoder
from nnunet_transfer.losses.log_dice import NegativeLogSoftDice
from nnunet_transfer.losses.wrapping import with_base_loss
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
        loss = super()._build_loss()
        base = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
        base.weight_ce = 0.0  # nnU-Net's compound losses skip the cross-entropy term at weight 0: soft Dice only
        return with_base_loss(loss, NegativeLogSoftDice(base)) if self.log_dice else loss


class FrozenEncoderTrainer_logDice(FrozenEncoderTrainer):
    """:class:`FrozenEncoderTrainer` with the paper's loss, the negative log soft Dice."""

    log_dice = True
