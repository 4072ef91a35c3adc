"""``set-pretrained``: write a pretrained-weights record into the plans, after checking that the plans normalise the
intensities as the checkpoint expects (or writing plans that do), and, for nnssl checkpoints, nnU-Net master's
``pretrain_info`` block next to it. The checkpoint is read once for all of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.transfer.normalisation import (MATCH_OPTION, expected_normalisation, normalisation_mismatch,
                                                    write_matching_plans)
from nnunet_transfer.transfer.pretrain_info import pretrain_info_from_nnssl, write_pretrain_info
from nnunet_transfer.transfer.record import PretrainedRecord, write_record

__all__ = ["set_pretrained"]


def set_pretrained(plans_file: Path, configuration: str, record: PretrainedRecord,
                   match_normalisation: bool = False) -> tuple[Path, List[str]]:
    """Write ``record`` into ``configuration`` of ``plans_file`` (or of the matching plans written from it);
    returns (the plans file that holds the record, messages for the user: warnings and next steps)."""
    messages: List[str] = []
    source = read_source_weights(record.checkpoint)
    nnssl = source.format == "nnssl"
    expected = expected_normalisation(record.checkpoint, source.reading.plans, nnssl)
    if match_normalisation:
        if expected is None:
            raise InvalidValueError(f"nothing states which intensity normalisation {record.checkpoint} expects (no zoo "
                                    f"record of that file name, no plans in it): leave out {MATCH_OPTION}")
        plans_file, notes = write_matching_plans(plans_file, expected)
        messages += [f"wrote {plans_file} with the normalisation {expected.source} expects:"] + \
                    [f"  {n}" for n in notes]
        messages.append(f"preprocess again: nnUNetv2_preprocess -d ID -plans_name {plans_file.stem} -c "
                        f"{configuration}")
    elif expected is not None:
        mismatch = normalisation_mismatch(json.loads(plans_file.read_text()), configuration, expected)
        if mismatch:
            messages.append(f"WARNING: {mismatch}. Fine-tuning sees other intensities than the pretraining did; "
                            f"add {MATCH_OPTION} to write plans with the matching normalisation")
    write_record(plans_file, configuration, record, source=source)
    if nnssl:
        checkpoint = Path(record.checkpoint)
        name = checkpoint.parent.name if checkpoint.name == "checkpoint_final.pth" else checkpoint.stem
        write_pretrain_info(plans_file, pretrain_info_from_nnssl(source, name))
        messages.append(f"also wrote nnU-Net master's pretrain_info block ({name}) into {plans_file.name}: the plans "
                        "work with nnUNetv2_train_pretrained too")
    return plans_file, messages


def match_recorded_normalisation(plans_file: Path, configuration: str) -> tuple[Path, List[str]]:
    """Write plans with the normalisation the checkpoint of ``configuration``'s existing record expects (e.g. a record
    ``plan-arch --weights`` wrote); the record comes along unchanged. Returns (new plans file, messages)."""
    from nnunet_transfer.transfer.record import read_record

    plans = json.loads(Path(plans_file).read_text())
    record = read_record((plans.get("configurations") or {}).get(configuration) or {})
    if record is None:
        raise InvalidValueError(f"{plans_file} [{configuration}] has no pretrained-weights record: give the checkpoint")
    source = read_source_weights(record.checkpoint)
    expected = expected_normalisation(record.checkpoint, source.reading.plans, source.format == "nnssl")
    if expected is None:
        raise InvalidValueError(
            f"nothing states which intensity normalisation {record.checkpoint} expects (no zoo record "
            "of that file name, no plans in it)")
    new_file, notes = write_matching_plans(plans_file, expected)
    return new_file, ([f"wrote {new_file} with the normalisation {expected.source} expects (and the same record):"]
                      + [f"  {n}" for n in notes]
                      + [f"preprocess again: nnUNetv2_preprocess -d ID -plans_name {new_file.stem} -c "
                         f"{configuration}"])


def remove_pretrained(plans_file: Path, configuration: str,
                      pretrain_info: bool = True) -> Tuple[bool, Optional[str]]:
    """Remove the record of ``configuration`` (and the plans' ``pretrain_info`` block): whether there was a record,
    and a message when a block was removed."""
    had_record = write_record(plans_file, configuration, None)
    if pretrain_info and "pretrain_info" in json.loads(Path(plans_file).read_text()):
        write_pretrain_info(plans_file, None)
        return had_record, f"removed the pretrain_info block of {plans_file}"
    return had_record, None
