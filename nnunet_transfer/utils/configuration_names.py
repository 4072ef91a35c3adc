"""A configuration name the user gives (``-c 3d_fullres``) is checked against the plans it refers to before any work
starts: ``-c 3d_nonsense`` is refused naming the plans file, its configurations and close matches."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

from nnunet_transfer.errors import MissingEntryError, did_you_mean
from nnunet_transfer.utils.json_files import read_json_object, require_entries

__all__ = ["require_configurations"]


def require_configurations(plans_file: Union[str, Path], configurations: Iterable[str]) -> None:
    """Raise :class:`~nnunet_transfer.errors.MissingEntryError` for the first of ``configurations`` that
    ``plans_file`` does not define."""
    fix = "plan the dataset again with nnU-Net (nnUNetv2_plan_and_preprocess)"
    plans = read_json_object(plans_file, fix)
    require_entries(plans, {"configurations": dict}, plans_file, fix)
    known = sorted(plans["configurations"])
    for name in configurations:
        if name not in plans["configurations"]:
            raise MissingEntryError(
                f"{plans_file} has no configuration {name!r}{did_you_mean(name, known)} (it has: {', '.join(known)})",
                file=plans_file, fix="give one of these with -c")
