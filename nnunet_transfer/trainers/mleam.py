"""nnU-Net training of MLEAM networks: segmentation loss + multi-level edge loss (paper mleam-prostate-edge-attention).

The network (``MLEAMUNet`` on the plain or on a Med3D encoder) comes from the plans that ``nnunet-transfer plan-arch
... --decoder mleam`` writes, so nnU-Net's own ``build_network_architecture`` builds it for training and prediction
(deep supervision off: the forward returns the segmentation tensor).

Loss: nnU-Net's loss exactly as nnU-Net builds it (Dice + CE, or Dice + BCE for regions, inside its
deep-supervision wrapper) plus ``sum_i w_i * MSE(sigmoid(edge_i), wavelet edge map of the target at that scale)``
over the network's three edge levels, ``w = edge_loss_weights`` (paper: 0.5, 0.8, 1.0, coarsest level first).
:class:`~nnunet_transfer.losses.mleam_edge.MLEAMLoss` wraps nnU-Net's loss and reads the edge logits that the network
left on ``last_edge_logits`` during the forward pass nnU-Net just ran, so ``train_step``/``validation_step`` stay
nnU-Net's. The mean edge loss
(and each level's MSE) is written to the training log after every training and validation epoch.

Optimiser: nnU-Net's (SGD, poly from 1e-2) by default; ``paper_schedule = True`` (variant
:class:`MLEAMTrainer_paper`) uses the paper's Adam (betas 0.9, 0.999) from 1e-3, divided by 10 every 2000 iterations.
nnU-Net sets the learning rate once per epoch from the epoch number, so the decay happens at the first epoch boundary
at or after each multiple of 2000 iterations (exact when 2000 is a multiple of ``num_iterations_per_epoch``, e.g.
every 8 epochs at nnU-Net's 250 iterations; :class:`~nnunet_transfer.trainers.lr_schedulers.StepDecayLRScheduler`).
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from nnunet_transfer.losses.mleam_edge import MLEAM_EDGE_WEIGHTS, MLEAMLoss
from nnunet_transfer.trainers.finetune import FineTuneTrainer
from nnunet_transfer.trainers.lr_schedulers import StepDecayLRScheduler
from nnunet_transfer.trainers.med3d import network_deep_supervision_scales
from nnunet_transfer.utils.modules import unwrap_network

__all__ = ["MLEAMTrainer", "MLEAMTrainer_paper", "MLEAMTrainer_paperNoEdge"]


class MLEAMTrainer(FineTuneTrainer):
    """MLEAMUNet from the plans; nnU-Net's loss + the weighted edge loss; optional paper optimiser and schedule."""

    #: paper's w^1, w^2, w^3 (coarsest edge level first)
    edge_loss_weights: Sequence[float] = MLEAM_EDGE_WEIGHTS
    #: Adam (0.9, 0.999) from ``paper_initial_lr``, x ``paper_lr_gamma`` every ``paper_step_iterations``
    paper_schedule: bool = False
    paper_initial_lr: float = 1e-3
    paper_step_iterations: int = 2000
    paper_lr_gamma: float = 0.1

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.paper_schedule:
            self.initial_lr = self.paper_initial_lr

    # ------------------------------------------------------------------ network contract
    def _get_deep_supervision_scales(self):
        return network_deep_supervision_scales(self)

    def _edge_logits(self) -> Sequence[torch.Tensor]:
        network = unwrap_network(self.network)
        if not hasattr(network, "last_edge_logits"):
            raise TypeError(f"{type(self).__name__} needs an MLEAM network (with last_edge_logits), the plans build "
                            f"{type(network).__name__}; make the plans with `nnunet-transfer plan-arch ... "
                            "--decoder mleam`")
        return network.last_edge_logits

    # ------------------------------------------------------------------ loss
    def _build_loss(self) -> nn.Module:
        return MLEAMLoss(super()._build_loss(), self._edge_logits, self.edge_loss_weights,
                         ignore_label=self.label_manager.ignore_label)

    def _log_edge_losses(self, phase: str) -> None:
        loss = self.loss
        if isinstance(loss, MLEAMLoss):
            self.print_to_log_file(f"{phase} edge loss: {loss.summary(loss.pop_history())}")

    def on_train_epoch_start(self) -> None:
        if isinstance(self.loss, MLEAMLoss):
            self.loss.pop_history()  # a resumed or interrupted epoch must not mix into this one
        super().on_train_epoch_start()

    def on_train_epoch_end(self, train_outputs: List[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        self._log_edge_losses("train")

    def on_validation_epoch_end(self, val_outputs: List[dict]) -> None:
        super().on_validation_epoch_end(val_outputs)
        self._log_edge_losses("validation")

    # ------------------------------------------------------------------ optimiser
    def make_optimizer(self, param_groups: List[dict]) -> torch.optim.Optimizer:
        if not self.paper_schedule:
            return super().make_optimizer(param_groups)
        return torch.optim.Adam(param_groups, lr=self.initial_lr, betas=(0.9, 0.999), weight_decay=self.weight_decay)

    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        if self.paper_schedule:
            scheduler = StepDecayLRScheduler(optimizer, self.initial_lr, self.num_iterations_per_epoch,
                                             self.paper_step_iterations, self.paper_lr_gamma, self.lr_warmup_epochs)
        return optimizer, scheduler


class MLEAMTrainer_paper(MLEAMTrainer):
    """The paper's optimiser: Adam (0.9, 0.999) from 1e-3, divided by 10 every 2000 iterations."""

    paper_schedule = True


class MLEAMTrainer_paperNoEdge(MLEAMTrainer_paper):
    """The paper's setting without edge supervision (edge-loss weights 0): the ablation arm of the mleam-prostate
    recipe, everything else equal."""

    edge_loss_weights = (0.0, 0.0, 0.0)
