"""Before a converter writes ``$nnUNet_raw/DatasetXXX_Name``: never replace what is there without ``--force``, and
clean up the staging folders a killed conversion left behind.

A converter builds the new dataset in a hidden staging folder and renames it into place
(:func:`nnunet_transfer.data.raw_dataset.staged_dataset`), which replaces a dataset of the same name entirely:
files the user added there would be lost, and a converter of another kind (``convert kvasir`` over a 3D KiTS
dataset) would go through. :func:`refuse_to_replace` stops that unless the user passes ``--force``, and says what
would be replaced. A conversion killed with SIGKILL leaves its ``.DatasetXXX_Name.staging-PID-*`` folder behind;
:func:`remove_stale_staging` removes those of processes that no longer run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import List

from nnunet_transfer.errors import NnUNetTransferError

__all__ = ["DatasetExistsError", "describe_dataset", "refuse_to_replace", "stale_staging_folders",
           "remove_stale_staging"]

#: hidden folders :func:`~nnunet_transfer.data.raw_dataset.staged_dataset` creates next to the target
_STAGING = re.compile(r"^\.(Dataset\d+_.+)\.(staging|old)-(\d+)-[0-9a-f]+$")
_CONVERTER_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


class DatasetExistsError(NnUNetTransferError, FileExistsError):
    """The target dataset folder exists; converting would replace it (pass ``--force``)."""


def describe_dataset(folder: Path) -> str:
    """One line about an existing raw dataset: its files, what dataset.json says, and files a converter would
    not write (which the user probably put there)."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    counts = {name: sum(1 for p in files if p.relative_to(folder).parts[0] == name) for name in _CONVERTER_FOLDERS}
    others = sorted(p.relative_to(folder).as_posix() for p in files
                    if p.relative_to(folder).parts[0] not in _CONVERTER_FOLDERS and p.name != "dataset.json")
    parts = [f"{len(files)} files"] + [f"{name}: {n}" for name, n in counts.items() if n]
    try:
        meta = json.loads((folder / "dataset.json").read_text())
        channels = ", ".join(str(v) for v in meta.get("channel_names", {}).values())
        parts.append(f"dataset.json: channels [{channels}], {len(meta.get('labels', {}))} labels"
                     + (f", converted by {meta['converted_by']}" if meta.get("converted_by") else ""))
    except (OSError, ValueError, AttributeError):
        parts.append("no readable dataset.json")
    if others:
        shown = ", ".join(others[:5]) + (f", ... (+{len(others) - 5})" if len(others) > 5 else "")
        parts.append(f"other files: {shown}")
    return "; ".join(parts)


def refuse_to_replace(target: Path, force: bool) -> None:
    """Raise :class:`DatasetExistsError` (saying what is there) when ``target`` exists and ``force`` is False."""
    if force or not (target.exists() or target.is_symlink()):
        return
    raise DatasetExistsError(
        f"{target} already exists ({describe_dataset(target) if target.is_dir() else 'not a folder'}); "
        "converting would replace it", file=target,
        fix="pass --force to replace it, or choose another dataset id (-d) or --name")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_staging_folders(raw_dir: Path) -> List[Path]:
    """Staging (and set-aside) folders in ``raw_dir`` whose converting process no longer runs."""
    if not raw_dir.is_dir():
        return []
    stale = []
    for entry in sorted(raw_dir.iterdir()):
        m = _STAGING.match(entry.name)
        if m and entry.is_dir() and not _process_alive(int(m.group(3))):
            stale.append(entry)
    return stale


def remove_stale_staging(raw_dir: Path) -> List[Path]:
    """Clean up after killed conversions (printing each step); return the folders handled.

    A staging folder (never complete) is removed. A set-aside previous dataset (``.old-``) is removed when its
    dataset is in place again, and renamed back to it when the kill came between the two renames of publishing
    (so the user's previous dataset is restored, never deleted).
    """
    stale = stale_staging_folders(raw_dir)
    for folder in stale:
        m = _STAGING.match(folder.name)
        target = raw_dir / m.group(1)
        if m.group(2) == "old" and not (target.exists() or target.is_symlink()):
            print(f"restoring {target} from {folder}, set aside by an interrupted conversion")
            os.rename(folder, target)
        else:
            print(f"removing {folder}, left behind by an interrupted conversion")
            shutil.rmtree(folder)
    return stale
