"""``-d ID`` or ``-d DatasetXXX_Name`` to nnU-Net's dataset folder name, with close matches when it does not exist.

nnU-Net's ``maybe_convert_to_dataset_name`` resolves an id by searching its three folders, but passes a name
through unchecked, so a misspelled name fails later with a missing file. :func:`dataset_name` resolves both and
names the datasets that look like the one asked for.
"""

from __future__ import annotations

import re
from typing import List, Union

from nnunet_transfer.discovery import set_nnunet_folders
from nnunet_transfer.errors import NnUNetTransferError, did_you_mean

__all__ = ["DatasetNotFoundError", "known_datasets", "dataset_name"]

_DATASET = re.compile(r"^Dataset\d{3}_.+$")


class DatasetNotFoundError(NnUNetTransferError, LookupError):
    """No dataset of this id or name in nnUNet_raw, nnUNet_preprocessed or nnUNet_results."""


def known_datasets() -> List[str]:
    """``DatasetXXX_Name`` folders in the nnU-Net folders that are set."""
    names = set()
    for root in set_nnunet_folders():
        if root.is_dir():
            names |= {p.name for p in root.iterdir() if p.is_dir() and _DATASET.match(p.name)}
    return sorted(names)


def dataset_name(dataset: Union[int, str]) -> str:
    """nnU-Net's folder name of ``dataset`` (an id or a ``DatasetXXX_Name``), checked to exist in one of its
    folders; :class:`DatasetNotFoundError` with close matches otherwise."""
    known = known_datasets()
    text = str(dataset)
    if text.isdigit():
        matches = [n for n in known if int(n[7:10]) == int(text)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise DatasetNotFoundError(f"dataset id {int(text)} is ambiguous: {', '.join(matches)}",
                                       fix="rename or remove all but one of them")
    elif text in known:
        return text
    hint = did_you_mean(text, known) if not text.isdigit() else ""
    listing = ", ".join(known[:10]) if known else "none"
    raise DatasetNotFoundError(
        f"no dataset {text!r} in nnUNet_raw, nnUNet_preprocessed or nnUNet_results{hint} (found: {listing})",
        fix="check -d, and that the nnUNet_* variables point at your folders (nnunet-transfer doctor)")
