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

Budget of the paper schedule. The paper gives no number of iterations. nnU-Net's 1000 x 250 iterations would spend
242,000 of its 250,000 iterations (97 %) at rates below 1e-6 (1e-9 from epoch 48 on), where Adam's steps change
nothing. A step
schedule in which every step matters ends when the next division would take the rate to the negligible: the paper's
schedule has three useful levels (1e-3, 1e-4, 1e-5), so :class:`MLEAMTrainer_paper` trains 3 x 2000 = 6000
iterations (24 epochs of nnU-Net's 250; at the paper's batch of 16 that is 96,000 patches, ~1,900 per volume of
PROMISE12's 50). Not a single iteration runs below 1e-5. ``paper_total_iterations`` changes it.

Augmentation: :class:`MLEAMTrainer_paper` adds the paper's random B-spline deformation on a 2 x 2 x 2 control grid
(:class:`~nnunet_transfer.augmentation.bspline_deformation.BSplineDeformationTransform`, every sample, displacement
SD ``bspline_sigma`` voxels: the paper gives none) right after nnU-Net's spatial transform; the rest of nnU-Net's
augmentation stays.

Pretraining (:class:`MLEAMPretrainTrainer`): the paper pretrains the encoder on other MRI data with SGD (momentum 0.9)
from 0.01, which "decrease[s] by a weight decay of 1.0 x 10^-6 after each epoch", with cross entropy only. We read
the decay as the learning rate's inverse-time decay ``0.01 / (1 + 1e-6 * epoch)`` (over any nnU-Net budget a
practically constant rate) and use no weight decay (``pretrain_weight_decay``: the other reading, an L2 decay of
1e-6); the loss is nnU-Net's cross-entropy term alone (its Dice term weighted 0). Network from the plans (e.g.
``plan-arch -a med3d-resnet101``; the paper's "simple decoder" is not specified further, so the plans' decoder is used).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from torch import nn

from nnunet_transfer.augmentation.bspline_deformation import BSplineDeformationTransform
from nnunet_transfer.losses.mleam_edge import MLEAM_EDGE_WEIGHTS, MLEAMLoss
from nnunet_transfer.trainers.finetune import FineTuneTrainer
from nnunet_transfer.trainers.lr_schedulers import InverseTimeDecayLRScheduler, StepDecayLRScheduler
from nnunet_transfer.trainers.med3d import network_deep_supervision_scales
from nnunet_transfer.utils.modules import unwrap_network
from nnunet_transfer.errors import WrongKindError

__all__ = ["MLEAMTrainer", "MLEAMTrainer_paper", "MLEAMTrainer_paperNoEdge", "MLEAMPretrainTrainer"]


def insert_after_spatial_transform(transforms: ComposeTransforms, transform: BasicTransform) -> None:
    """Put ``transform`` right after nnU-Net's ``SpatialTransform`` (after its return to 3D in pseudo-2D mode)."""
    items = transforms.transforms
    spatial = [i for i, t in enumerate(items) if isinstance(t, SpatialTransform)]
    if not spatial:
        raise RuntimeError("nnU-Net's training transforms have no SpatialTransform to put the deformation after")
    position = spatial[0] + 1
    if position < len(items) and isinstance(items[position], Convert2DTo3DTransform):
        position += 1
    items.insert(position, transform)


class MLEAMTrainer(FineTuneTrainer):
    """MLEAMUNet from the plans; nnU-Net's loss + the weighted edge loss; optional paper optimiser and schedule."""

    #: paper's w^1, w^2, w^3 (coarsest edge level first)
    edge_loss_weights: Sequence[float] = MLEAM_EDGE_WEIGHTS
    #: Adam (0.9, 0.999) from ``paper_initial_lr``, x ``paper_lr_gamma`` every ``paper_step_iterations``
    paper_schedule: bool = False
    paper_initial_lr: float = 1e-3
    paper_step_iterations: int = 2000
    paper_lr_gamma: float = 0.1
    #: with ``paper_schedule``: the whole run in iterations (rounded up to whole epochs); None keeps nnU-Net's epochs
    paper_total_iterations: Optional[int] = None
    #: the paper's random B-spline deformation (control grid ``bspline_mesh_size`` per axis) after nnU-Net's spatial
    #: transform, displacement SD ``bspline_sigma`` voxels
    bspline_deformation: bool = False
    bspline_mesh_size: int = 2
    bspline_sigma: float = 4.0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.paper_schedule:
            self.initial_lr = self.paper_initial_lr
            if self.paper_total_iterations is not None:
                self.num_epochs = math.ceil(self.paper_total_iterations / self.num_iterations_per_epoch)

    @classmethod
    def get_training_transforms(cls, *args, **kwargs) -> BasicTransform:
        """nnU-Net's training transforms, with the B-spline deformation after its spatial transform when
        ``bspline_deformation``."""
        transforms = super(MLEAMTrainer, cls).get_training_transforms(*args, **kwargs)
        if cls.bspline_deformation:
            insert_after_spatial_transform(transforms, BSplineDeformationTransform(cls.bspline_mesh_size,
                                                                                   cls.bspline_sigma))
        return transforms

    # ------------------------------------------------------------------ network contract
    def _get_deep_supervision_scales(self):
        return network_deep_supervision_scales(self)

    def _edge_logits(self) -> Sequence[torch.Tensor]:
        network = unwrap_network(self.network)
        if not hasattr(network, "last_edge_logits"):
            raise WrongKindError(
                f"{type(self).__name__} needs an MLEAM network (with last_edge_logits), the plans build "
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
    """The paper's optimiser: Adam (0.9, 0.999) from 1e-3, divided by 10 every 2000 iterations, for 6000 iterations
    (the three useful rate levels, see the module docstring); the paper's B-spline deformation."""

    paper_schedule = True
    paper_total_iterations = 6000
    bspline_deformation = True


class MLEAMPretrainTrainer(FineTuneTrainer):
    """The paper's encoder pretraining: cross entropy only; SGD momentum 0.9 from 0.01, inverse-time decay 1e-6 per
    epoch, no weight decay (see the module docstring)."""

    pretrain_lr: float = 1e-2
    pretrain_momentum: float = 0.9
    pretrain_lr_decay: float = 1e-6
    pretrain_weight_decay: float = 0.0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.pretrain_lr
        self.weight_decay = self.pretrain_weight_decay

    def _get_deep_supervision_scales(self):
        return network_deep_supervision_scales(self)

    def _build_loss(self) -> nn.Module:
        loss = super()._build_loss()
        base = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
        base.weight_dice = 0.0  # nnU-Net's compound losses skip the Dice term at weight 0: cross entropy only
        return loss

    def make_optimizer(self, param_groups: List[dict]) -> torch.optim.Optimizer:
        return torch.optim.SGD(param_groups, lr=self.initial_lr, momentum=self.pretrain_momentum,
                               weight_decay=self.weight_decay)

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        return optimizer, InverseTimeDecayLRScheduler(optimizer, self.initial_lr, self.pretrain_lr_decay,
                                                      self.lr_warmup_epochs)


class MLEAMTrainer_paperNoEdge(MLEAMTrainer_paper):
    """The paper's setting without edge supervision (edge-loss weights 0): the ablation arm of the mleam-prostate
    recipe, everything else equal."""

    edge_loss_weights = (0.0, 0.0, 0.0)
