"""nnU-Net's predictor set up from a trained-model folder without unpickling anything or trusting its plans.

``nnUNetPredictor.initialize_from_trained_model_folder`` loads every fold's checkpoint with
``torch.load(weights_only=False)`` and builds the network from plans.json as it stands. For a folder from elsewhere
(a results folder given to ``predict-tasks``, a model zip installed by ``predict-export``) we instead

1. read ``dataset.json`` bounded and ``plans.json`` through :func:`~nnunet_transfer.pretrained.plans_check.read_foreign_plans`
   (architecture classes allow-listed, sizes checked; ``trusted``: the user's ``--trust-architecture`` names);
2. read each fold's checkpoint once with ``torch.load(weights_only=True)`` (numpy numbers allowed);
3. build the network with the trainer's own ``build_network_architecture`` (as nnU-Net does) and hand everything
   to nnU-Net's documented ``nnUNetPredictor.manual_initialization``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.pretrained.plans_check import read_foreign_plans
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError, read_torch_file_data_only
from nnunet_transfer.utils.bounded_io import read_json_bounded

__all__ = ["initialize_checked_predictor", "read_training_checkpoint"]

_REQUIRED = ("network_weights", "init_args", "trainer_name")


def read_training_checkpoint(path: Path) -> Dict[str, Any]:
    """An nnU-Net training checkpoint read once as data (``weights_only``), with the keys prediction needs."""
    obj = read_torch_file_data_only(path)
    if not isinstance(obj, dict) or not all(k in obj for k in _REQUIRED):
        found = sorted(map(str, obj))[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointFormatError(f"{path} is not an nnU-Net training checkpoint: it lacks one of {list(_REQUIRED)} "
                                    f"(found {found})", file=path, fix="give checkpoints written by nnUNetv2_train")
    trainer, init_args = obj["trainer_name"], obj["init_args"]
    if not isinstance(trainer, str) or not trainer.isidentifier() or not isinstance(init_args, dict) \
            or not isinstance(init_args.get("configuration"), str):
        raise CheckpointFormatError(f"{path}: trainer_name {trainer!r} or init_args.configuration is not a name",
                                    file=path, fix="give checkpoints written by nnUNetv2_train")
    return obj


def initialize_checked_predictor(predictor: Any, model_dir: Union[str, Path], folds: Sequence[Union[int, str]],
                                 checkpoint_name: str = "checkpoint_final.pth",
                                 trusted: Sequence[str] = ()) -> None:
    """Set ``predictor`` (an ``nnUNetPredictor``) up for ``model_dir`` as ``initialize_from_trained_model_folder``
    would, from checked plans and weights read with ``weights_only`` (see the module docstring)."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model_dir = Path(model_dir)
    dataset_json = read_json_bounded(model_dir / "dataset.json")
    plans = read_foreign_plans(model_dir / "plans.json", trusted)
    if not isinstance(dataset_json, dict) or not isinstance(dataset_json.get("labels"), dict):
        raise NnUNetTransferError(f"{model_dir / 'dataset.json'} has no 'labels' dict", file=model_dir / "dataset.json",
                                  fix="use the dataset.json the model was trained with")
    checkpoints: List[Dict[str, Any]] = []
    for fold in folds:
        name = "fold_all" if str(fold) == "all" else f"fold_{int(fold)}"
        checkpoints.append(read_training_checkpoint(model_dir / name / checkpoint_name))
    first = checkpoints[0]
    configuration = first["init_args"]["configuration"]
    if configuration not in plans["configurations"]:
        raise NnUNetTransferError(f"{model_dir}: the checkpoints belong to configuration {configuration!r}, which "
                                  f"{model_dir / 'plans.json'} does not have", file=model_dir / "plans.json",
                                  fix="use the plans.json the model was trained with")
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    trainer_class = recursive_find_trainer_class_by_name(first["trainer_name"])
    num_inputs = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    num_outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    if "plans_manager" in inspect.signature(trainer_class.build_network_architecture).parameters:
        network = trainer_class.build_network_architecture(plans_manager, configuration_manager, num_inputs,
                                                           num_outputs, enable_deep_supervision=False)
    else:  # the older signature nnU-Net still supports
        network = trainer_class.build_network_architecture(
            configuration_manager.network_arch_class_name, configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import, num_inputs, num_outputs,
            enable_deep_supervision=False)
    axes = first.get("inference_allowed_mirroring_axes")
    if axes is not None and not (isinstance(axes, (tuple, list)) and len(axes) <= 3
                                 and all(isinstance(a, int) and 0 <= a < 3 for a in axes)):
        raise CheckpointFormatError(f"{model_dir}: inference_allowed_mirroring_axes {axes!r} are not axes 0-2",
                                    file=model_dir, fix="give checkpoints written by nnUNetv2_train")
    parameters = [c["network_weights"] for c in checkpoints]
    network.load_state_dict(parameters[0])
    predictor.manual_initialization(network, plans_manager, configuration_manager, parameters, dataset_json,
                                    first["trainer_name"], None if axes is None else tuple(axes))
