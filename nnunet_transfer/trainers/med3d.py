"""Fine-tuning a MedicalNet (Med3D) encoder network with nnU-Net.

The network comes from the plans (``nnunet-transfer plan-arch -a med3d-resnet50`` names
:class:`~nnunet_transfer.architectures.med3d_unet.Med3DUNet`, or MLEAMUNet on a Med3D encoder), so nnU-Net's own
``build_network_architecture`` builds it for training and for ``nnUNetv2_predict``. The MedicalNet weights come in
through the plans' pretrained-weights record that ``plan-arch --weights`` writes (``encoder.*`` <- MedicalNet keys),
applied by :class:`~nnunet_transfer.trainers.finetune.FineTuneTrainer`, which also reports what was loaded.

Batch norm: the Med3D encoder keeps MedicalNet's BatchNorm layers. With ``freeze_encoder`` (or during
``head_warmup_epochs``) FineTuneTrainer puts the norm layers of frozen parts in eval mode at the start of every
training epoch, so their pretrained running statistics stay as they are; trainable encoders update them as usual.

MedicalNet recipe (``medicalnet_recipe = True``, variant :class:`Med3DFinetuneTrainer_MedicalNet`): pretrained
tensors learn at ``medicalnet_pretrained_lr`` (1e-3, the Med3D paper's fine-tuning rate) and the new layers
(decoder, heads) ``medicalnet_new_layer_lr_multiplier`` (10) times faster, i.e. at nnU-Net's own 1e-2, with nnU-Net's
SGD (momentum 0.99) and poly schedule. MedicalNet's ``train.py`` uses 100x on SGD with momentum 0.9 at 1e-3; with
nnU-Net's momentum of 0.99 that would put the new layers at 0.1, which diverges, so the factor is a class attribute
rather than a copy of that number.

MedicalNet's own optimiser (``medicalnet_optimizer = True``, variant :class:`Med3DFinetuneTrainer_MedicalNetSGD`):
``train.py`` exactly: SGD with momentum 0.9 (no Nesterov) and weight decay 1e-3, pretrained tensors at 1e-3 and
new layers at 100x (0.1), ``ExponentialLR(gamma=0.99)`` stepped once per epoch before it
(:class:`~nnunet_transfer.trainers.lr_schedulers.ExponentialLRScheduler`). nnU-Net's loss, data pipeline and epoch
length stay (MedicalNet trains with cross-entropy only).

The Med3D paper's fine-tuning (``paper_adam = True``, variants :class:`Med3DFinetuneTrainer_paperAdam` and
:class:`Med3DFinetuneTrainer_paperAdamScratch`): "Adam starting from the 0.001 learning rate" for networks
initialised with Med3D, "0.01" for training from scratch. Every parameter at that one rate; the paper names no
schedule and no weight decay, so nnU-Net's poly decay and weight decay (3e-5) stay. The scratch variant refuses
pretrained weights (a plans record or ``-pretrained_weights``), so the comparison's two arms cannot be mixed up.
The paper's normalisation is in the plans and the data: ``nnunet-transfer clip-intensities`` then
``nnunet-transfer plan -pl Med3DPlanner`` (:mod:`nnunet_transfer.planning.paper_planners`).
"""

from __future__ import annotations

from typing import List, Optional

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.trainers.finetune import FineTuneTrainer
from nnunet_transfer.trainers.lr_schedulers import ExponentialLRScheduler
from nnunet_transfer.transfer.record import read_record
from nnunet_transfer.utils.modules import unwrap_network

__all__ = ["Med3DFinetuneTrainer", "Med3DFinetuneTrainer_MedicalNet", "Med3DFinetuneTrainer_MedicalNetSGD",
           "Med3DFinetuneTrainer_frozenEncoder", "Med3DFinetuneTrainer_paperAdam", "Med3DFinetuneTrainer_paperAdamScratch",
           "network_deep_supervision_scales"]


def network_deep_supervision_scales(trainer: nnUNetTrainer) -> Optional[List[List[float]]]:
    """Deep-supervision scales for nnU-Net's target downsampling, taken from the network when it says them.

    nnU-Net derives them from the plans' ``strides`` (``1 / cumprod(strides)[:-1]``). That is right for
    :class:`Med3DUNet` (its plans ``strides`` are its resolution levels) and for MLEAMUNet on the plain encoder, but
    not for MLEAMUNet on a Med3D encoder, whose decoder has two more levels at 1/8 and one at full resolution than its
    three strides tell. Networks with a ``deep_supervision_scales()`` method (MLEAMUNet) are asked directly.
    """
    if not trainer.enable_deep_supervision:
        return None
    network = unwrap_network(trainer.network) if trainer.network is not None else None
    scales = getattr(network, "deep_supervision_scales", None)
    if callable(scales):
        return [list(s) for s in scales()]
    return nnUNetTrainer._get_deep_supervision_scales(trainer)


class Med3DFinetuneTrainer(FineTuneTrainer):
    """nnU-Net training of a Med3D-encoder network from the plans, with FineTuneTrainer's transfer and controls.

    ``medicalnet_recipe``: pretrained tensors at ``medicalnet_pretrained_lr``, new layers
    ``medicalnet_new_layer_lr_multiplier`` times that (see the module docstring).
    """

    medicalnet_recipe: bool = False
    medicalnet_pretrained_lr: float = 1e-3
    medicalnet_new_layer_lr_multiplier: float = 10.0
    #: MedicalNet's optimiser and schedule (train.py): SGD momentum 0.9, weight decay 1e-3, ExponentialLR 0.99
    medicalnet_optimizer: bool = False
    medicalnet_momentum: float = 0.9
    medicalnet_weight_decay: float = 1e-3
    medicalnet_lr_gamma: float = 0.99
    #: the Med3D paper's fine-tuning: Adam from ``paper_adam_lr`` for every parameter
    paper_adam: bool = False
    paper_adam_lr: float = 1e-3
    #: refuse pretrained weights (the paper's training from scratch)
    from_scratch: bool = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.medicalnet_recipe:
            if self.medicalnet_new_layer_lr_multiplier <= 0 or self.medicalnet_pretrained_lr <= 0:
                raise ValueError(f"{type(self).__name__}: medicalnet_pretrained_lr and "
                                 "medicalnet_new_layer_lr_multiplier must be positive")
            # FineTuneTrainer: initial_lr is the new layers' rate, pretrained tensors get initial_lr * factor
            self.initial_lr = self.medicalnet_pretrained_lr * self.medicalnet_new_layer_lr_multiplier
            self.pretrained_lr_factor = 1.0 / self.medicalnet_new_layer_lr_multiplier
        if self.paper_adam:
            self.initial_lr = self.paper_adam_lr

    def _load_pretrained(self):
        if not self.from_scratch:
            return super()._load_pretrained()
        given = self.pretrained_weights_file or getattr(read_record(self.configuration_manager.configuration),
                                                        "checkpoint", None)
        if given is not None:
            raise NnUNetTransferError(f"{type(self).__name__} trains from scratch, but pretrained weights are given "
                                      f"({given})",
                                      fix="drop -pretrained_weights / remove the plans' record (nnunet-transfer "
                                          "set-pretrained --remove), or use Med3DFinetuneTrainer_paperAdam")
        return None

    def make_optimizer(self, param_groups: List[dict]) -> torch.optim.Optimizer:
        if self.paper_adam:
            return torch.optim.Adam(param_groups, lr=self.initial_lr, weight_decay=self.weight_decay)
        if not self.medicalnet_optimizer:
            return super().make_optimizer(param_groups)
        return torch.optim.SGD(param_groups, lr=self.initial_lr, momentum=self.medicalnet_momentum,
                               weight_decay=self.medicalnet_weight_decay)

    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        if self.medicalnet_optimizer:
            scheduler = ExponentialLRScheduler(optimizer, self.initial_lr, self.medicalnet_lr_gamma,
                                               self.lr_warmup_epochs)
        return optimizer, scheduler

    def _get_deep_supervision_scales(self):
        return network_deep_supervision_scales(self)


class Med3DFinetuneTrainer_MedicalNet(Med3DFinetuneTrainer):
    """MedicalNet's learning-rate split: pretrained encoder at 1e-3, new layers at 1e-2."""

    medicalnet_recipe = True


class Med3DFinetuneTrainer_MedicalNetSGD(Med3DFinetuneTrainer):
    """MedicalNet's ``train.py`` optimiser: SGD momentum 0.9, weight decay 1e-3, encoder 1e-3, new layers 100x,
    ExponentialLR 0.99 per epoch."""

    medicalnet_recipe = True
    medicalnet_new_layer_lr_multiplier = 100.0
    medicalnet_optimizer = True


class Med3DFinetuneTrainer_frozenEncoder(Med3DFinetuneTrainer):
    """Only the new layers train; the MedicalNet encoder (weights and batch-norm statistics) stays as loaded."""

    freeze_encoder = True


class Med3DFinetuneTrainer_paperAdam(Med3DFinetuneTrainer):
    """The Med3D paper's fine-tuning of a Med3D-initialised network: Adam from 1e-3."""

    paper_adam = True


class Med3DFinetuneTrainer_paperAdamScratch(Med3DFinetuneTrainer):
    """The Med3D paper's training from scratch: Adam from 1e-2, no pretrained weights."""

    paper_adam = True
    paper_adam_lr = 1e-2
    from_scratch = True
