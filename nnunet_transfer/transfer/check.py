"""``nnunet-transfer transfer-check``: what a checkpoint would give a fine-tuning run, without training.

Builds the network exactly as the trainer will (its ``build_network_architecture`` on the target's plans and
dataset.json), then runs the same transfer path the trainer uses and returns its report.
"""

from __future__ import annotations

import json
from typing import Optional

from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.transfer.record import plans_file_of, read_record, transfer_from_record
from nnunet_transfer.transfer.weights import (HEAD_PATTERNS, TransferReport, nnunet_pretrained_weights_report,
                                              transfer_weights)
from nnunet_transfer.errors import InvalidValueError


def transfer_check(checkpoint: Optional[str], dataset: int, configuration: str, trainer: str,
                   plans: str = "nnUNetPlans") -> tuple[TransferReport, str]:
    """(report, mode): mode says which path a run would take ("nnunet -pretrained_weights" or "plans record")."""
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_file = plans_file_of(dataset, plans)
    folder = plans_file.parent
    plans_manager = PlansManager(json.loads(plans_file.read_text()))
    dataset_json = json.loads((folder / "dataset.json").read_text())
    cfg = plans_manager.get_configuration(configuration)
    label_manager = plans_manager.get_label_manager(dataset_json)
    trainer_class = recursive_find_trainer_class_by_name(trainer)
    network = trainer_class.build_network_architecture(
        plans_manager, cfg, determine_num_input_channels(plans_manager, cfg, dataset_json),
        label_manager.num_segmentation_heads, True)
    new_layers = getattr(trainer_class, "new_layer_patterns", HEAD_PATTERNS)
    with torch.no_grad():
        record = read_record(cfg.configuration)
        if checkpoint is None:
            if record is None:
                raise InvalidValueError(f"no checkpoint given and {plans_file} has no pretrained-weights record for "
                                        f"{configuration}")
            return transfer_from_record(network, record, new_layers), "plans record"
        source = read_source_weights(checkpoint)  # read once; both paths below work from these tensors
        try:
            return nnunet_pretrained_weights_report(network, source), "nnunet -pretrained_weights"
        except (KeyError, ValueError) as nnunet_refusal:
            report = transfer_weights(network, source, head_patterns=new_layers, source_name=source.source)
            return report, f"plans record needed ({nnunet_refusal})"
