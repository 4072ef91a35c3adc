"""Med3D-style pretraining on the partially labelled MOTS datasets, as an ordinary nnU-Net trainer.

``nnUNetv2_train 600 3d_fullres 0 -tr Med3DPretrainTrainer [-p nnUNetPlans_med3d-resnet10]`` trains Med3D's
pretraining network (:class:`~nnunet_transfer.architectures.med3d_branches.Med3DBranchNetwork`): one shared encoder
and one 1x1x1-convolution branch per source dataset, upsampled to the patch size, on a dataset made by
``nnunet-transfer convert mots``. The encoder is the plans' own: a Med3D ResNet with plans from
``nnunet-transfer plan-arch -a med3d-resnetN`` (the decoder those plans name is not built), or the encoder of the
plans' U-Net (``nnUNetPlans``).

Everything else is :class:`~nnunet_transfer.trainers.mots_pretrain.MOTSPretrainTrainer`'s: each step conditions the
network on its batch's tasks (read from the case-to-task map in dataset.json), so every case runs and trains only
its own dataset's branch; the partial-label loss scores only that task's channels; validation is per task. Deep
supervision is off (Med3D has one output, at full resolution). The branches of tasks absent from the (global, under
DDP) batch get no optimiser step: neither momentum nor weight decay moves them.

At the end of training the encoder is written next to the checkpoints (atomically; the log names the file):

* Med3D ResNet encoder: ``med3d_resnet<depth>_encoder_medicalnet.pth`` in MedicalNet's released layout
  (``{'state_dict': {'module.conv1.weight': ...}}``), which ``plan-arch -a med3d-resnet<depth> --weights``,
  ``Med3DFinetuneTrainer`` and ``MLEAMTrainer`` take like a released MedicalNet file;
* the plans' own encoder: ``encoder.pth``, the plain ``encoder.*`` state dict ``extract-encoder`` writes, for
  ``set-pretrained`` / ``transfer-check`` (the transfer module adapts it to other plans).
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import distributed as dist
from torch import nn

from nnunet_transfer.architectures.med3d import Med3DResNet
from nnunet_transfer.architectures.med3d_branches import Med3DBranchNetwork
from nnunet_transfer.data import mots_tasks
from nnunet_transfer.trainers.mots_pretrain import MOTSPretrainTrainer, plans_backbone
from nnunet_transfer.transfer.encoder_export import extract_encoder
from nnunet_transfer.utils.modules import unwrap_network

__all__ = ["Med3DPretrainTrainer", "build_med3d_pretrain_network", "PLAIN_ENCODER_FILE"]

#: file name of the exported encoder when it is the plans' own (not a Med3D ResNet)
PLAIN_ENCODER_FILE = "encoder.pth"


def build_med3d_pretrain_network(configuration_manager: ConfigurationManager, num_input_channels: int,
                                 num_output_channels: int) -> Med3DBranchNetwork:
    """The plans' encoder with one Med3D branch per MOTS task (the plans' decoder is built and dropped)."""
    backbone = plans_backbone(configuration_manager, num_input_channels, num_output_channels,
                              mots_tasks.HEAD_OUTPUTS_PER_TASK, enable_deep_supervision=False)
    return Med3DBranchNetwork(backbone.encoder, mots_tasks.NUM_TASKS, mots_tasks.head_channel_index(),
                              mots_tasks.HEAD_OUTPUTS_PER_TASK)


def encoder_file_name(network: Med3DBranchNetwork) -> str:
    """Name of the encoder file the trainer writes for ``network`` (see the module docstring)."""
    if isinstance(network.encoder, Med3DResNet):
        return f"med3d_resnet{network.encoder.depth}_encoder_medicalnet.pth"
    return PLAIN_ENCODER_FILE


class Med3DPretrainTrainer(MOTSPretrainTrainer):
    """Med3D's multi-dataset pretraining: shared encoder, one 1x1x1 branch per source dataset."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False  # one full-resolution output per branch, as Med3D
        #: tasks absent from the current step's global batch: their branches are left out of the optimiser step
        self._absent_tasks: List[int] = []

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return build_med3d_pretrain_network(configuration_manager, num_input_channels, num_output_channels)

    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        optimizer.register_step_pre_hook(self._skip_absent_branches)
        return optimizer, scheduler

    def train_step(self, batch: dict) -> dict:
        present = torch.zeros(mots_tasks.NUM_TASKS, device=self.device)
        present[self.tasks_of(list(batch["keys"]))] = 1
        if self.is_ddp:
            dist.all_reduce(present)
        self._absent_tasks = [t for t in range(mots_tasks.NUM_TASKS) if not present[t]]
        return super().train_step(batch)

    def _skip_absent_branches(self, optimizer, args, kwargs) -> None:
        """Optimiser step pre-hook: the branches of absent tasks ran on no sample (a zero gradient, which DDP needs);
        without a gradient the step leaves them as they are."""
        branches = unwrap_network(self.network).decoder.branches
        for task in self._absent_tasks:
            for param in branches[task].parameters():
                param.grad = None

    def on_train_end(self) -> None:
        super().on_train_end()
        if self.local_rank == 0:
            self.export_encoder()

    def export_encoder(self) -> Path:
        """Write the trained encoder next to the checkpoints (see the module docstring); returns its path."""
        network = unwrap_network(self.network)
        output = Path(self.output_folder) / encoder_file_name(network)
        layout = "medicalnet" if isinstance(network.encoder, Med3DResNet) else "plain"
        extract_encoder(network, output, overwrite=True, layout=layout)
        use = (f"plan-arch -a med3d-resnet{network.encoder.depth} --weights {output}" if layout == "medicalnet"
               else f"set-pretrained {output} -d TARGET_ID")
        self.print_to_log_file(f"Pretrained encoder ({layout} layout) written to {output}; "
                               f"use it with `nnunet-transfer {use}`")
        return output
