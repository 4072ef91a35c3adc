"""KiTS21 fine-tuning with the HEC-weighted cross entropy (paper kits21-dodnet-transfer).

Loss = soft Dice + CE + 0.1 x BCE("Kidney and Masses") + 0.3 x BCE("Kidney Mass"); optimiser and schedule are
nnU-Net's (SGD, momentum 0.99, poly from 0.01), as in the paper. Pretrained weights come in through
:class:`~nnunet_transfer.trainers.finetune.FineTuneTrainer` (``-pretrained_weights`` or the plans record).
"""

from __future__ import annotations

from typing import Mapping, Tuple

import torch
from torch import nn

from nnunet_transfer.losses.hec import KITS21_HEC_WEIGHTS, hec_loss_for_trainer
from nnunet_transfer.losses.wrapping import with_base_loss
from nnunet_transfer.trainers.finetune import FineTuneTrainer


class KiTS21HECTrainer(FineTuneTrainer):
    """nnU-Net training on KiTS21 labels with the HEC-weighted loss; weights in ``hec_weights``."""

    hec_weights: Mapping[str, Tuple[Tuple[int, ...], float]] = KITS21_HEC_WEIGHTS

    def _build_loss(self) -> nn.Module:
        return with_base_loss(super()._build_loss(), hec_loss_for_trainer(self, self.hec_weights))


class KiTS21HECTrainer_100epochs(KiTS21HECTrainer):
    """The paper's ablation schedule: 100 epochs (poly decay over 100)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 100
