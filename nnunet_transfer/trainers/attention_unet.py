"""The attention-gated U-Net fine-tuned across modalities (paper attention-unet-finetuning) as an nnU-Net trainer:
nnU-Net's plain U-Net with additive attention gates on every skip, BCE + Dice, L2 through weight decay, Adam 1e-4;
reduce-on-plateau and early stopping on the validation Dice as options. A gate-free U-Net checkpoint (another dataset,
1 -> 3 input channels included) loads through the plans' pretrained-weights record; the gates start fresh and are
reported as new layers.

The paper's own network (:class:`AttentionUNetTrainer_brainUNet`, without gates
:class:`AttentionUNetTrainer_brainUNetNoGates`): the public brain-MRI U-Net of mateuszbuda/brain-segmentation-pytorch
(:class:`~nnunet_transfer.architectures.brain_unet.BrainUNet`) that the paper fine-tunes, built for every plans of a
2D configuration (patch a multiple of 16), so its release weights ``unet.pt`` load by name through the plans' record
(``nnunet-transfer set-pretrained unet.pt -d ID -c 2d -p PLANS --exclude conv.weight conv.bias``: the release's
one-channel head is left out). With data whose channels nnU-Net scales to [0, 1] (``rgb_to_0_1``, e.g.
``convert kvasir --image-preprocessing attention-paper``) the network maps them to the paper's [-1, 1].
No deep supervision (the network has one output)."""

from __future__ import annotations

from typing import List, Optional

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_transfer.architectures.attention_unet import GATE_KEY_PREFIX
from nnunet_transfer.architectures.brain_unet import BrainUNet
from nnunet_transfer.pretrained.formats.brain_unet import BRAIN_UNET_HEAD
from nnunet_transfer.trainers.finetune import FineTuneTrainer
from nnunet_transfer.trainers.lr_schedulers import PlateauLRScheduler
from nnunet_transfer.transfer.weights import HEAD_PATTERNS
from nnunet_transfer.errors import NotApplicableError

PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
ATTENTION_UNET = "nnunet_transfer.architectures.attention_unet.AttentionUNet"


class _EarlyStop(Exception):
    """Raised at the end of an epoch when the validation Dice stopped improving."""


class AttentionUNetTrainer(FineTuneTrainer):
    """Attention-gated plain U-Net from the plans; Adam 1e-4 with L2 weight decay; optional plateau/early stop."""

    new_layer_patterns = HEAD_PATTERNS + (GATE_KEY_PREFIX,)
    #: ReduceLROnPlateau on the validation Dice instead of nnU-Net's poly schedule
    reduce_lr_on_plateau: bool = False
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    #: stop after this many epochs without a new best validation Dice (None: train all epochs)
    early_stopping_patience: Optional[int] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-4
        self.weight_decay = 1e-5
        self._epochs_without_improvement = 0

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        arch = configuration_manager.network_arch_class_name
        if arch not in (PLAIN_UNET, ATTENTION_UNET):
            raise NotApplicableError(
                f"AttentionUNetTrainer adds gates to nnU-Net's plain U-Net; these plans name {arch}. "
                "Plan the dataset with nnU-Net's default planner (nnUNetPlans).")
        return get_network_from_plans(ATTENTION_UNET, configuration_manager.network_arch_init_kwargs,
                                      configuration_manager.network_arch_init_kwargs_req_import, num_input_channels,
                                      num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)

    def make_optimizer(self, param_groups: List[dict]) -> torch.optim.Optimizer:
        return torch.optim.Adam(param_groups, lr=self.initial_lr, weight_decay=self.weight_decay)

    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        if self.reduce_lr_on_plateau:
            scheduler = PlateauLRScheduler(optimizer, self._latest_validation_dice, factor=self.plateau_factor,
                                           patience=self.plateau_patience)
        return optimizer, scheduler

    def _latest_validation_dice(self) -> Optional[float]:
        values = self.logger.get_value("ema_fg_dice", step=None)
        return float(values[-1]) if values else None

    def on_epoch_end(self) -> None:
        best_before = self._best_ema
        super().on_epoch_end()
        improved = best_before is None or self._best_ema > best_before
        self._epochs_without_improvement = 0 if improved else self._epochs_without_improvement + 1
        patience = self.early_stopping_patience
        if patience is not None and self._epochs_without_improvement >= patience:
            self.print_to_log_file(f"Early stopping: no better validation Dice for {patience} epochs")
            raise _EarlyStop()

    def run_training(self) -> None:
        try:
            super().run_training()
        except _EarlyStop:
            self.on_train_end()


class AttentionUNetTrainer_brainUNet(AttentionUNetTrainer):
    """The paper's network: the public brain-MRI U-Net with attention gates (see the module docstring)."""

    #: attention gates on the four skips
    brain_unet_gates: bool = True
    brain_unet_features: int = 32
    new_layer_patterns = HEAD_PATTERNS + ("attention_gates.",) + BRAIN_UNET_HEAD

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        patch = list(configuration_manager.patch_size)
        if len(patch) != 2 or any(p % 16 for p in patch):
            raise NotApplicableError(
                f"{cls.__name__} builds the 2D brain U-Net (four 2x2 poolings); the configuration has "
                f"patch size {patch}: train a 2d configuration whose patch is a multiple of 16 "
                "(e.g. the 256 x 256 images of convert kvasir --image-preprocessing attention-paper)")
        unit_range = all(s == "RGBTo01Normalization" for s in configuration_manager.normalization_schemes)
        return BrainUNet(num_input_channels, num_output_channels, cls.brain_unet_features,
                         attention_gates=cls.brain_unet_gates, input_from_unit_range=unit_range)

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """No-op: the brain U-Net has one output."""


class AttentionUNetTrainer_brainUNetNoGates(AttentionUNetTrainer_brainUNet):
    """The public brain-MRI U-Net without attention gates (the paper's comparison without attention)."""

    brain_unet_gates = False
