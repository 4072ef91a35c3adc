"""DoDNet-style pretraining on the partially labelled MOTS datasets, as an ordinary nnU-Net trainer.

``nnUNetv2_train 600 3d_fullres 0 -tr MOTSPretrainTrainer`` trains the plans' backbone with DoDNet's dynamic head
on a dataset made by ``nnunet-transfer convert mots``. What differs from ``nnUNetTrainer`` is kept to the hooks:

* network: the plans' architecture with the task-conditioned dynamic head (:mod:`..architectures.dynamic_head`);
* loss: BCE + soft Dice on the channels each sample's task labels (:mod:`..losses.partial_label`), inside nnU-Net's
  own deep-supervision wrapper;
* each train/validation step conditions network and loss on the batch's tasks, read from the case-to-task map
  the converter stored in dataset.json, then runs nnU-Net's own step;
* validation Dice is reported per task (log and progress_per_region.png); the final validation predicts each case with its
  own task's head only (as DoDNet's evaluation: other tasks' regions cannot overwrite its labels in the written
  label map): the trainer's dataset class is nnU-Net's with a report of each loaded case
  (:mod:`..trainers.task_datasets`), and ``summary_per_task.json`` scores each validation case on its own task.

Optimiser and schedule are nnU-Net's defaults, which are DoDNet's: SGD, momentum 0.99, Nesterov, lr 1e-2, poly 0.9.
"""

from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_transfer.architectures.dynamic_head import DynamicHeadNetwork
from nnunet_transfer.data import mots_tasks
from nnunet_transfer.evaluation.partial_label import evaluate_partial_label_folder, format_task_table
from nnunet_transfer.losses.partial_label import PartialLabelDiceBCELoss
from nnunet_transfer.losses.wrapping import with_base_loss
from nnunet_transfer.trainers.guarded import GuardedTrainer
from nnunet_transfer.trainers.progress import plot_region_dice
from nnunet_transfer.trainers.task_datasets import on_case_loaded, task_conditioned_dataset_class
from nnunet_transfer.utils.modules import unwrap_network
from nnunet_transfer.errors import MissingEntryError, NotApplicableError

#: channels of the 8-channel decoder features the dynamic head reads (DoDNet)
HEAD_IN_CHANNELS = 8


def balanced_sampling_list(identifiers: List[str], case_to_task: Dict[str, int], resolution: int = 8) -> List[str]:
    """Identifiers repeated so that uniform sampling draws a case with probability ~ 1/sqrt(cases of its task).

    nnU-Net's data loader samples uniformly from the dataset's identifier list; repeating each case
    round(resolution * sqrt(n_max / n_task)) times gives MultiTalent's weighting without touching the loader
    (a task's total share then grows as sqrt(n_task) instead of n_task).
    """
    counts = Counter(case_to_task[i] for i in identifiers)
    n_max = max(counts.values())
    repeated: List[str] = []
    for ident in identifiers:
        n = counts[case_to_task[ident]]
        repeated.extend([ident] * max(1, round(resolution * math.sqrt(n_max / n))))
    return repeated


def plans_backbone(configuration_manager: ConfigurationManager, num_input_channels: int, num_output_channels: int,
                   backbone_classes: int, enable_deep_supervision: bool = True) -> nn.Module:
    """The plans' network built with ``backbone_classes`` outputs, for a MOTS network of ``num_output_channels``
    regions (checked: the pretraining networks read their heads' layout from :mod:`..data.mots_tasks`)."""
    if num_output_channels != mots_tasks.NUM_OUTPUT_CHANNELS:
        raise RuntimeError(f"the MOTS network has {mots_tasks.NUM_OUTPUT_CHANNELS} output regions, "
                           f"the plans/dataset ask for {num_output_channels}")
    return get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        num_input_channels, backbone_classes, allow_init=True, deep_supervision=enable_deep_supervision)


def build_mots_network(configuration_manager: ConfigurationManager, num_input_channels: int,
                       num_output_channels: int, enable_deep_supervision: bool = True,
                       controller_pooling: str = "raw") -> DynamicHeadNetwork:
    """The plans' backbone with 8 output features and DoDNet's dynamic head (``controller_pooling``: see
    :class:`DynamicHeadNetwork`)."""
    backbone = plans_backbone(configuration_manager, num_input_channels, num_output_channels, HEAD_IN_CHANNELS,
                              enable_deep_supervision)
    return DynamicHeadNetwork(backbone.encoder, backbone.decoder, mots_tasks.NUM_TASKS,
                              mots_tasks.head_channel_index(), head_in_channels=HEAD_IN_CHANNELS,
                              controller_pooling=controller_pooling)


class MOTSPretrainTrainer(GuardedTrainer):
    """Multi-task partial-label pretraining with DoDNet's dynamic head."""

    #: sample each case with probability proportional to 1 / sqrt(cases of its task) (see the Balanced variant)
    task_balanced_sampling: bool = False
    #: resolution of the balanced sampling: a case of the largest task appears this many times in the sampling list
    balanced_sampling_resolution: int = 8

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.case_to_task = mots_tasks.read_case_to_task(dataset_json)
        if self.label_manager.num_segmentation_heads != mots_tasks.NUM_OUTPUT_CHANNELS:
            raise NotApplicableError(
                f"{type(self).__name__} needs the MOTS region labels ({mots_tasks.NUM_OUTPUT_CHANNELS} regions), "
                f"but this dataset.json gives {self.label_manager.num_segmentation_heads} outputs. Convert the data "
                "with `nnunet-transfer convert mots`.")
        self._partial_loss: PartialLabelDiceBCELoss | None = None

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return build_mots_network(configuration_manager, num_input_channels, num_output_channels,
                                  enable_deep_supervision)

    def _do_i_compile(self) -> bool:
        # the per-step task conditioning is a tensor attribute of the network; keep it out of torch.compile's guards
        return False

    def _build_loss(self) -> nn.Module:
        """nnU-Net's loss construction (deep-supervision weights included) with our partial-label loss inside."""
        if not self.label_manager.has_regions:
            raise NotApplicableError(
                "MOTS pretraining needs a region-based dataset.json (see `nnunet-transfer convert mots`)")
        self._partial_loss = PartialLabelDiceBCELoss(
            [ch.task for ch in mots_tasks.OUTPUT_CHANNELS], batch_dice=self.configuration_manager.batch_dice,
            smooth=1e-5, ddp=self.is_ddp)
        return with_base_loss(super()._build_loss(), self._partial_loss)

    def tasks_of(self, keys: List[str]) -> torch.Tensor:
        """Task index of each case identifier of a batch."""
        try:
            return torch.as_tensor([self.case_to_task[k] for k in keys], dtype=torch.long, device=self.device)
        except KeyError as e:
            raise MissingEntryError(f"case {e.args[0]!r} is missing from the dataset's case_to_task map") from None

    @contextmanager
    def conditioned_on_batch(self, batch: dict) -> Iterator[None]:
        """Network evaluates, and the loss scores, only each sample's own task inside the block."""
        tasks = self.tasks_of(list(batch["keys"]))
        self._partial_loss.task_ids = tasks
        try:
            with unwrap_network(self.network).conditioned_on(tasks):
                yield
        finally:
            self._partial_loss.task_ids = None

    def train_step(self, batch: dict) -> dict:
        with self.conditioned_on_batch(batch):
            return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        # non-task channels come out "not evaluated" (probability 0) and their targets are 0 on the other tasks'
        # scans, so nnU-Net's tp/fp/fn per region become per-task counts
        with self.conditioned_on_batch(batch):
            return super().validation_step(batch)

    def on_validation_epoch_end(self, val_outputs: List[dict]) -> None:
        super().on_validation_epoch_end(val_outputs)
        dice = self.logger.get_value("dice_per_class_or_region", step=-1)
        table = format_task_table({ch.name: d for ch, d in zip(mots_tasks.OUTPUT_CHANNELS, dice)})
        self.print_to_log_file("Pseudo dice per task (validation patches):\n" + table, add_timestamp=False)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()  # nnU-Net draws progress.png (rank 0); next to it, one curve per region
        if self.local_rank == 0:
            plot_region_dice(self.output_folder, self.logger.get_value("dice_per_class_or_region", step=None),
                             [ch.name for ch in mots_tasks.OUTPUT_CHANNELS])

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        if self.task_balanced_sampling:
            dataset_tr.identifiers = self.balanced_sampling_list(list(dataset_tr.identifiers))
        return dataset_tr, dataset_val

    def balanced_sampling_list(self, identifiers: List[str]) -> List[str]:
        counts = Counter(self.case_to_task[i] for i in identifiers)
        self.print_to_log_file("Task-balanced sampling, cases per task: "
                               + ", ".join(f"{mots_tasks.TASKS[t].name}={n}" for t, n in sorted(counts.items())))
        return balanced_sampling_list(identifiers, self.case_to_task, self.balanced_sampling_resolution)

    def initialize(self) -> None:
        super().initialize()
        # nnU-Net chose its dataset class (blosc2 or numpy); ours reports each case the final validation loads
        self.dataset_class = task_conditioned_dataset_class(self.dataset_class)

    def _condition_on_case(self, identifier: str) -> None:
        """The network evaluates only ``identifier``'s task until the next case is loaded."""
        unwrap_network(self.network).task_ids = self.tasks_of([identifier])

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """nnU-Net's final validation with every case predicted with its own task's head only (DoDNet's
        evaluation: other tasks' regions cannot overwrite its labels in the written label map), then the per-task
        summary."""
        with unwrap_network(self.network).conditioned_on(None), on_case_loaded(self._condition_on_case):
            super().perform_actual_validation(save_probabilities)
        if self.local_rank != 0:
            return
        validation_folder = Path(self.output_folder) / "validation"
        gt_folder = Path(self.preprocessed_dataset_folder_base) / "gt_segmentations"
        if not any(validation_folder.glob("*" + self.dataset_json["file_ending"])):
            return
        result = evaluate_partial_label_folder(validation_folder, gt_folder, self.case_to_task,
                                               self.dataset_json["file_ending"],
                                               output_json=validation_folder / "summary_per_task.json",
                                               expected_cases=self.do_split()[1])
        self.print_to_log_file("Validation Dice per task (each case scored on its own task only):\n"
                               + format_task_table(result["mean"]), add_timestamp=False)


class MOTSPretrainTrainerBalanced(MOTSPretrainTrainer):
    """MOTS pretraining with task-balanced sampling: P(case) ~ 1/sqrt(cases of its task) (MultiTalent)."""

    task_balanced_sampling = True


class MOTSPretrainTrainerDoDNetPooling(MOTSPretrainTrainer):
    """MOTS pretraining whose controller reads GroupNorm(16) + ReLU + global average pooling of the bottleneck,
    as DoDNet's ``self.GAP`` (the default trainer pools the raw encoder output; its checkpoints lack ``gap_norm.*``).
    """

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return build_mots_network(configuration_manager, num_input_channels, num_output_channels,
                                  enable_deep_supervision, controller_pooling="groupnorm_relu")
