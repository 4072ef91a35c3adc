"""``nnunet-transfer transfer-check``: what a checkpoint would give a fine-tuning run, without training.

Understands both our pretrained-weights record and nnU-Net master's ``pretrain_info`` block. Builds the network
exactly as the trainer will (its ``build_network_architecture`` on the target's plans and
dataset.json), then runs the same transfer path the trainer uses and returns its report.
"""

from __future__ import annotations

from typing import Optional, Sequence

from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.transfer.pretrain_info import read_pretrain_info, transfer_from_pretrain_info
from nnunet_transfer.transfer.record import plans_file_of, read_record, transfer_from_record
from nnunet_transfer.transfer.weights import (HEAD_PATTERNS, TransferReport, nnunet_pretrained_weights_report,
                                              transfer_weights)
from nnunet_transfer.utils.configuration_names import require_configurations
from nnunet_transfer.utils.json_files import read_json_object


def transfer_check(checkpoint: Optional[str], dataset: int, configuration: str, trainer: str,
                   plans: str = "nnUNetPlans", trusted: Sequence[str] = ()) -> tuple[TransferReport, str]:
    """(report, mode): mode says which path a run would take ("nnunet -pretrained_weights" or "plans record").

    ``trusted``: architecture class names the user trusts in plans that come with ``checkpoint``."""
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_file = plans_file_of(dataset, plans)
    folder = plans_file.parent
    replan = "plan the dataset again with nnU-Net (nnUNetv2_plan_and_preprocess)"
    require_configurations(plans_file, [configuration])
    plans_manager = PlansManager(read_json_object(plans_file, replan))
    dataset_json = read_json_object(folder / "dataset.json", replan)
    cfg = plans_manager.get_configuration(configuration)
    label_manager = plans_manager.get_label_manager(dataset_json)
    try:
        trainer_class = recursive_find_trainer_class_by_name(trainer)
    except RuntimeError:  # nnU-Net's "Could not find requested nnunet trainer"
        raise InvalidValueError(f"nnU-Net finds no trainer class named {trainer!r}",
                                fix='check -tr, and that nnUNet_extTrainer is set: eval "$(nnunet-transfer env)"'
                                ) from None
    network = trainer_class.build_network_architecture(
        plans_manager, cfg, determine_num_input_channels(plans_manager, cfg, dataset_json),
        label_manager.num_segmentation_heads, True)
    new_layers = getattr(trainer_class, "new_layer_patterns", HEAD_PATTERNS)
    with torch.no_grad():
        record = read_record(cfg.configuration)
        if checkpoint is None:
            if record is not None:
                return transfer_from_record(network, record, new_layers), "plans record"
            info = read_pretrain_info(plans_manager.plans)
            if info is None or info.checkpoint_path is None:
                raise InvalidValueError(f"no checkpoint given and {plans_file} has no pretrained-weights record for "
                                        f"{configuration} and no pretrain_info block with a checkpoint_path")
            return (transfer_from_pretrain_info(network, info, new_layers),
                    f"plans pretrain_info (nnU-Net master's block, {info.checkpoint_name})")
        source = read_source_weights(checkpoint, trusted=trusted)  # read once; both paths below work from these tensors
        try:
            return nnunet_pretrained_weights_report(network, source), "nnunet -pretrained_weights"
        except (KeyError, ValueError) as nnunet_refusal:
            report = transfer_weights(network, source, head_patterns=new_layers, source_name=source.source)
            return report, f"plans record needed ({nnunet_refusal})"
