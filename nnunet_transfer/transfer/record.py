"""The pretrained-weights record: which checkpoint a configuration of the plans starts from, and how to map it.

nnU-Net's ``-pretrained_weights`` only works when every network key (but ``.seg_layers.``) is in the checkpoint.
For partial or foreign checkpoints (an encoder-only localiser, MedicalNet, a different decoder) the plans carry a
record instead, under ``configurations[<name>]["pretrained_weights"]``; our fine-tuning trainers apply it through
:func:`nnunet_transfer.transfer.weights.transfer_weights` when training starts. nnU-Net ignores unknown keys in a
configuration, so the plans stay valid for every stock command.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from torch import nn

from nnunet_transfer.discovery import nnunet_folder
from nnunet_transfer.errors import InvalidValueError, MissingEntryError
from nnunet_transfer.pretrained.formats.base import SourceWeights
from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.transfer.adapt import AdaptOptions
from nnunet_transfer.transfer.weight_values import check_weight_values
from nnunet_transfer.utils.atomic import write_atomically
from nnunet_transfer.transfer.weights import DEFAULT_EXCLUDE, HEAD_PATTERNS, TransferReport, transfer_weights

RECORD_KEY = "pretrained_weights"


@dataclass
class PretrainedRecord:
    """Where a configuration's initial weights come from."""

    checkpoint: str
    #: checkpoint key prefix -> network key prefix (e.g. {"": "encoder."} for MedicalNet files)
    prefix_map: Dict[str, str] = field(default_factory=dict)
    exclude: List[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    #: fail when less than this fraction of the network's parameters is loaded
    min_fraction: float = 0.0
    #: free text: where the checkpoint came from (MOTS pretraining, MedicalNet resnet_50_23dataset ...)
    description: str = ""
    #: adapt tensors of other shapes (kernels, strides, stages, feature counts); False loads equal shapes only
    adapt: bool = True
    #: kernel size -> 1 along an axis: "mean" (nnU-Net master's rule) or "sum"
    kernel_reduce: str = "mean"
    #: kernel size 1 -> k along an axis: "centre" (zeros around) or "spread"
    kernel_grow: str = "centre"
    #: architecture class names the user trusts in the plans that come with the checkpoint (a results folder's
    #: plans.json, an nnssl adaptation plan): ``--trust-architecture``
    trusted_architectures: List[str] = field(default_factory=list)

    @property
    def adapt_options(self) -> AdaptOptions:
        return AdaptOptions(enabled=self.adapt, kernel_reduce=self.kernel_reduce, kernel_grow=self.kernel_grow)

    @classmethod
    def from_dict(cls, data: Mapping) -> "PretrainedRecord":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidValueError(f"unknown keys in the plans' {RECORD_KEY} record: {sorted(unknown)}")
        if "checkpoint" not in data:
            raise InvalidValueError(f"the plans' {RECORD_KEY} record has no 'checkpoint' path")
        record = cls(**dict(data))
        record.adapt_options  # validates the rule names
        return record


def transfer_from_record(network: nn.Module, record: PretrainedRecord,
                         head_patterns: Sequence[str] = HEAD_PATTERNS) -> TransferReport:
    """Load ``record``'s checkpoint into ``network`` as a training run does (used by trainers and transfer-check): read
    once, with the record's trusted architecture names."""
    source = read_source_weights(record.checkpoint, trusted=record.trusted_architectures)
    return transfer_weights(network, source, prefix_map=record.prefix_map, exclude=record.exclude,
                            head_patterns=head_patterns, min_fraction=record.min_fraction,
                            adapt=record.adapt_options)


def read_record(configuration: Mapping) -> Optional[PretrainedRecord]:
    """The record of one plans configuration (``ConfigurationManager.configuration``), or None."""
    data = configuration.get(RECORD_KEY)
    return None if data is None else PretrainedRecord.from_dict(data)


def write_json_atomic(path: Union[str, Path], data: Mapping) -> None:
    """Write JSON through a temporary file + rename, so a crash never leaves a truncated plans file."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=4, sort_keys=False)))


def plans_file_of(dataset: int, plans: str = "nnUNetPlans") -> Path:
    """``$nnUNet_preprocessed/DatasetXXX_Name/<plans>.json``, checked to exist."""
    from nnunet_transfer.dataset_lookup import dataset_name

    path = nnunet_folder("nnUNet_preprocessed") / dataset_name(dataset) / f"{plans}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; plan the dataset first (nnUNetv2_plan_and_preprocess -d "
                                f"{dataset}) or align it (nnunet-transfer align-plans)")
    return path


def write_record(plans_file: Union[str, Path], configuration: str, record: Optional[PretrainedRecord],
                 source: Optional[SourceWeights] = None) -> bool:
    """Set (or with None remove) the record of ``configuration`` in an nnU-Net plans file; False when there was no
    record to remove (the file is then left untouched). ``source``: the record's checkpoint when the caller has read
    it already (else it is read here, to fail now rather than at training)."""
    plans_file = Path(plans_file)
    plans = json.loads(plans_file.read_text())
    if configuration not in plans.get("configurations", {}):
        raise MissingEntryError(f"{plans_file} has no configuration {configuration!r} "
                                f"(has: {sorted(plans.get('configurations', {}))})")
    if record is None:
        if plans["configurations"][configuration].pop(RECORD_KEY, None) is None:
            return False
    else:
        checkpoint = Path(record.checkpoint)
        if not checkpoint.exists():  # a file, or an nnU-Net results folder / model zip
            raise FileNotFoundError(f"pretrained checkpoint {checkpoint} does not exist")
        record.adapt_options  # validates the rule names before anything is written
        # open it now (data only), so an empty, damaged or booby-trapped file fails here and not when training starts
        if source is None:
            source = read_source_weights(checkpoint, trusted=record.trusted_architectures)
        check_weight_values(source.tensors, str(checkpoint))
        record = PretrainedRecord(**{**asdict(record), "checkpoint": str(checkpoint.resolve())})
        plans["configurations"][configuration][RECORD_KEY] = asdict(record)
    write_json_atomic(plans_file, plans)
    return True
