"""Give a fine-tuning dataset the pretraining dataset's plans, so that weights move between them.

This is nnU-Net's documented pretraining flow (``nnUNetv2_extract_fingerprint``,
``nnUNetv2_move_plans_between_datasets``, ``nnUNetv2_preprocess``) in one call, through nnU-Net's own API, plus
optionally writing the pretrained-weights record into the moved plans.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional, Sequence

from nnunet_transfer.discovery import nnunet_folder
from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.pretrained.plans_check import read_foreign_plans
from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.transfer.record import PretrainedRecord, write_record
from nnunet_transfer.utils.configuration_names import require_configurations


def align_plans(source_dataset: int, target_dataset: int, source_plans: str = "nnUNetPlans",
                target_plans: Optional[str] = None, configurations: Sequence[str] = ("3d_fullres",),
                preprocess: bool = True, pretrained_checkpoint: Optional[str] = None, num_processes: int = 2,
                verbose: bool = False, trusted: Sequence[str] = ()) -> Path:
    """Copy the source dataset's plans to the target dataset and preprocess the target with them.

    Returns the target plans file. ``target_plans`` defaults to ``<source_plans>_from<source id>`` so the target's
    own nnU-Net plans are never overwritten. With ``pretrained_checkpoint`` the configurations also get a
    pretrained-weights record (used by our fine-tuning trainers when ``-pretrained_weights`` is not given).
    The source plans (possibly from elsewhere) are checked as data first; ``trusted``: architecture class names the
    user trusts (``--trust-architecture``).
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, preprocess as nn_preprocess
    from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import (
        move_plans_between_datasets)
    from nnunet_transfer.dataset_lookup import dataset_name as resolve_dataset_name

    if pretrained_checkpoint is not None:  # a bad file fails now, before any plans are written
        read_source_weights(pretrained_checkpoint, trusted=trusted)
    source_name = resolve_dataset_name(source_dataset)
    target_name = resolve_dataset_name(target_dataset)
    if source_name == target_name:
        raise InvalidValueError(f"the pretraining and the fine-tuning dataset are both {source_name}",
                                fix="give the pretraining dataset with -s and another, fine-tuning dataset with -t")
    target_plans = target_plans or f"{source_plans}_from{source_dataset}"
    root = nnunet_folder("nnUNet_preprocessed")
    source_file = root / source_name / f"{source_plans}.json"
    if not source_file.is_file():
        raise FileNotFoundError(f"{source_file} does not exist. Plan the pretraining dataset first: "
                                f"nnUNetv2_plan_and_preprocess -d {source_dataset}")
    read_foreign_plans(source_file, trusted)  # the target's training builds its network from these plans
    require_configurations(source_file, configurations)
    if not (root / target_name / "dataset_fingerprint.json").is_file():
        print(f"[align-plans] extracting the fingerprint of {target_name}")
        extract_fingerprints([target_dataset], num_processes=num_processes, check_dataset_integrity=True,
                             clean=False, verbose=verbose)
    print(f"[align-plans] {source_name}/{source_plans} -> {target_name}/{target_plans}")
    move_plans_between_datasets(source_dataset, target_dataset, source_plans, target_plans)
    # nnU-Net's planner copies dataset.json next to the plans; moving plans skips the planner, but the
    # preprocessor and the trainers read it from there
    shutil.copyfile(nnunet_folder("nnUNet_raw") / target_name / "dataset.json", root / target_name / "dataset.json")
    target_file = root / target_name / f"{target_plans}.json"
    if pretrained_checkpoint is not None:
        for configuration in configurations:
            write_record(target_file, configuration, PretrainedRecord(
                checkpoint=pretrained_checkpoint, description=f"pretrained on {source_name} ({source_plans})",
                trusted_architectures=list(trusted)))
    if preprocess:
        print(f"[align-plans] preprocessing {target_name} with {target_plans} ({', '.join(configurations)})")
        nn_preprocess([target_dataset], plans_identifier=target_plans, configurations=list(configurations),
                      num_processes=[num_processes] * len(configurations), verbose=verbose)
    return target_file
