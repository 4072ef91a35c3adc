"""nnU-Net training of MLEAM networks: segmentation loss + multi-level edge loss (paper mleam-prostate-edge-attention).

The network (``MLEAMUNet`` on the plain or on a Med3D encoder) comes from the plans that ``nnunet-transfer plan-arch
... --decoder mleam`` writes, so nnU-Net's own ``build_network_architecture`` builds it for training and prediction
(deep supervision off: the forward returns the segmentation tensor).

Loss: nnU-Net's loss exactly as nnU-Net builds it (Dice + CE, or Dice + BCE for regions, inside its
deep-supervision wrapper) plus ``sum_i w_i * MSE(sigmoid(edge_i), wavelet edge map of the target at that scale)``
over the network's three edge levels, ``w = edge_loss_weights`` (paper: 0.5, 0.8, 1.0, coarsest level first).
:class:`MLEAMLoss` wraps nnU-Net's loss and reads the edge logits that the network left on ``last_edge_logits``
during the forward pass nnU-Net just ran, so ``train_step``/``validation_step`` stay nnU-Net's. The mean edge loss
(and each level's MSE) is written to the training log after every training and validation epoch.

Optimiser: nnU-Net's (SGD, poly from 1e-2) by default; ``paper_schedule = True`` (variant
:class:`MLEAMTrainer_paper`) uses the paper's Adam (betas 0.9, 0.999) from 1e-3, divided by 10 every 2000 iterations.
nnU-Net sets the learning rate once per epoch from the epoch number, so the decay happens at the first epoch boundary
at or after each multiple of 2000 iterations (exact when 2000 is a multiple of ``num_iterations_per_epoch``, e.g.
every 8 epochs at nnU-Net's 250 iterations).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from nnunet_transfer.architectures.mleam import MLEAM_EDGE_WEIGHTS, mleam_edge_loss
from nnunet_transfer.trainers.finetune import FineTuneTrainer, WarmupPolyLRScheduler
from nnunet_transfer.trainers.med3d import network_deep_supervision_scales
from nnunet_transfer.utils.modules import unwrap_network

__all__ = ["MLEAMLoss", "StepDecayLRScheduler", "MLEAMTrainer", "MLEAMTrainer_paper"]


class MLEAMLoss(nn.Module):
    """``seg_loss(output, target) + mleam_edge_loss(edge_logits(), target)``, remembering the edge terms.

    ``seg_loss``: nnU-Net's loss (deep-supervision wrapper included). ``edge_logits``: returns the edge logits of the
    forward pass that produced ``output`` (``MLEAMUNet.last_edge_logits``, highest resolution first); a callable so the
    network is not registered as a submodule of the loss. ``target``: nnU-Net's target list (deep supervision) or
    full-resolution tensor. Every call appends the unweighted MSE of each edge level to :attr:`edge_history`.
    """

    def __init__(self, seg_loss: nn.Module, edge_logits: Callable[[], Sequence[torch.Tensor]],
                 weights: Sequence[float] = MLEAM_EDGE_WEIGHTS, ignore_label: Optional[int] = None):
        super().__init__()
        if not weights or any(w < 0 for w in weights):
            raise ValueError(f"MLEAMLoss: edge weights must be non-negative and not empty, got {tuple(weights)}")
        self.seg_loss = seg_loss
        self._edge_logits = edge_logits
        self.weights = tuple(float(w) for w in weights)
        self.ignore_label = ignore_label
        #: one row per call: unweighted MSE of each edge level, highest resolution first
        self.edge_history: List[List[float]] = []

    def level_weights(self, n_levels: int) -> List[float]:
        """Weights of ``n_levels`` edge maps, highest resolution first (paper order is coarsest first)."""
        if n_levels > len(self.weights):
            raise ValueError(f"MLEAMLoss: the network has {n_levels} edge levels but only {len(self.weights)} edge "
                             f"weights {self.weights} are set; set one weight per level")
        return list(self.weights[-n_levels:])[::-1]

    def forward(self, output, target) -> torch.Tensor:
        seg = self.seg_loss(output, target)
        edges = list(self._edge_logits())
        if not edges:
            raise RuntimeError("MLEAMLoss: the network left no edge logits; is it an MLEAMUNet (plans made with "
                               "`nnunet-transfer plan-arch ... --decoder mleam`)?")
        if not isinstance(target, torch.Tensor) and len(target) < len(edges):
            raise ValueError(f"MLEAMLoss: {len(edges)} edge levels but only {len(target)} deep-supervision targets; "
                             "the trainer's deep-supervision scales must be the network's "
                             "(MLEAMUNet.deep_supervision_scales())")
        mse = [mleam_edge_loss([e], target if isinstance(target, torch.Tensor) else [target[i]], weights=(1.0,),
                               ignore_label=self.ignore_label) for i, e in enumerate(edges)]
        self.edge_history.append([float(m.detach()) for m in mse])
        edge = sum(w * m for w, m in zip(self.level_weights(len(edges)), mse))
        return seg + edge

    def pop_history(self) -> np.ndarray:
        """The rows recorded since the last call, as an array (calls x levels); clears the record."""
        rows, self.edge_history = self.edge_history, []
        return np.asarray(rows, dtype=float)

    def summary(self, rows: np.ndarray) -> str:
        """``0.1234 (weighted sum; per level, highest resolution first: 0.01 / 0.02 / 0.03)``."""
        if rows.size == 0:
            return "no calls"
        means = rows.mean(axis=0)
        total = float(np.dot(self.level_weights(len(means)), means))
        return (f"{total:.4f} (weighted sum; MSE per level, highest resolution first: "
                + " / ".join(f"{m:.4f}" for m in means) + ")")


class StepDecayLRScheduler(WarmupPolyLRScheduler):
    """Learning rate ``initial_lr * gamma ** floor(iterations / step_iterations)``, set per epoch; honours
    ``lr_scale`` groups and the linear warm-up of :class:`WarmupPolyLRScheduler` (epochs after warm-up count)."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, iterations_per_epoch: int,
                 step_iterations: int = 2000, gamma: float = 0.1, warmup_steps: int = 0):
        if iterations_per_epoch < 1 or step_iterations < 1:
            raise ValueError(f"StepDecayLRScheduler: iterations_per_epoch ({iterations_per_epoch}) and "
                             f"step_iterations ({step_iterations}) must be >= 1")
        self.iterations_per_epoch = iterations_per_epoch
        self.step_iterations = step_iterations
        self.gamma = gamma
        super().__init__(optimizer, initial_lr, max_steps=0, warmup_steps=warmup_steps)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        iterations = (step - self.warmup_steps) * self.iterations_per_epoch
        return self.gamma ** (iterations // self.step_iterations)


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
