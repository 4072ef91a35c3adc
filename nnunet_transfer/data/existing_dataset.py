"""Before a converter writes ``$nnUNet_raw/DatasetXXX_Name``: one writer per dataset id, never replace what is there
without ``--force``, and clean up (or restore from) what a killed conversion left behind.

A converter builds the new dataset in a hidden staging folder and renames it into place
(:func:`nnunet_transfer.data.raw_dataset.staged_dataset`), which replaces a dataset of the same name entirely:
files the user added there would be lost, and a converter of another kind (``convert kvasir`` over a 3D KiTS
dataset) would go through. :func:`refuse_to_replace` stops that unless the user passes ``--force``, and says what
would be replaced. A conversion killed with SIGKILL leaves its ``.DatasetXXX_Name.staging-PID-*`` folder behind;
:func:`recover_interrupted` removes those, and puts back a previous dataset that a run killed between the two renames
of publishing had set aside (``.DatasetXXX_Name.old-PID-*``), so that the next run sees it and refuses to replace it
without ``--force``. All of this happens under the dataset id's lock (:func:`dataset_lock`): two conversions to the
same id never run at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.utils.locks import exclusive_lock, lock_file_for, process_alive, try_exclusive_lock

__all__ = ["DatasetExistsError", "describe_dataset", "refuse_to_replace", "dataset_lock", "recover_interrupted"]

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


def refuse_to_replace(target: Path, force: bool, restored_from: Optional[Path] = None) -> None:
    """Raise :class:`DatasetExistsError` (saying what is there) when ``target`` exists and ``force`` is False.

    A symbolic link is never replaced, not even with ``force``: renaming the new dataset into place would swap the
    link, not the data it points to, and leave that data behind unnoticed. ``restored_from``: the folder the
    dataset was just restored from (an interrupted replacement), named in the message.
    """
    if target.is_symlink():
        raise DatasetExistsError(
            f"{target} is a symbolic link to {os.readlink(target)}; nnunet-transfer does not replace linked datasets "
            "(the link would be replaced, not the data it points to)", file=target,
            fix=f"remove the link (rm {target}; the data it points to stays) and convert again, or convert into the "
                "linked folder's parent by setting nnUNet_raw there")
    if force or not target.exists():
        return
    restored = (f"; it was restored from {restored_from.name}, set aside by a replacing conversion that was "
                "interrupted" if restored_from is not None else "")
    raise DatasetExistsError(
        f"{target} already exists ({describe_dataset(target) if target.is_dir() else 'not a folder'}){restored}; "
        "converting would replace it", file=target,
        fix="pass --force (Python: force=True) to replace it, or choose another dataset id (-d) or --name")


def dataset_lock_file(raw_dir: Path, dataset_name: str) -> Path:
    """The lock file of the dataset id of ``DatasetXXX_Name`` (one per id: ids are what nnU-Net resolves)."""
    m = re.match(r"^Dataset(\d+)_", dataset_name)
    key = f"Dataset{int(m.group(1)):03d}" if m else dataset_name
    return lock_file_for(raw_dir, key)


@contextlib.contextmanager
def dataset_lock(target: Path) -> Iterator[None]:
    """Hold the lock of ``target``'s dataset id; :class:`~nnunet_transfer.errors.BusyError` when another run
    writes a dataset of that id."""
    with exclusive_lock(dataset_lock_file(target.parent, target.name), f"dataset {target.name}"):
        yield


def _leftovers(raw_dir: Path) -> Dict[str, List[Tuple[Path, str, int]]]:
    """Staging and set-aside entries in ``raw_dir``, by dataset folder name: ``(path, kind, pid)``."""
    found: Dict[str, List[Tuple[Path, str, int]]] = {}
    if not raw_dir.is_dir():
        return found
    for entry in sorted(raw_dir.iterdir()):
        m = _STAGING.match(entry.name)
        if m:
            found.setdefault(m.group(1), []).append((entry, m.group(2), int(m.group(3))))
    return found


def _remove(entry: Path) -> None:
    """Remove a leftover: a link is unlinked (never followed), a folder removed with its content."""
    if entry.is_symlink() or not entry.is_dir():
        entry.unlink()
    else:
        shutil.rmtree(entry)


def _recover_locked(target: Path, entries: List[Tuple[Path, str, int]]) -> Optional[Path]:
    """Handle the leftovers of ``target`` while holding its lock (so no run of ours writes it): staging folders are
    removed; a set-aside previous dataset is renamed back when ``target`` is missing (the kill came between the two
    renames of publishing), else removed (the kill came after the new dataset was in place). Returns the entry
    ``target`` was restored from, if any."""
    restored = None
    for entry, kind, _ in sorted(entries, key=lambda e: e[1] != "old"):  # restore first, then clean
        if kind == "old" and restored is None and not (target.exists() or target.is_symlink()):
            print(f"restoring {target} from {entry.name}, set aside by a replacing conversion that was interrupted "
                  "(nothing of it was replaced)")
            os.rename(entry, target)
            restored = entry
        else:
            print(f"removing {entry}, left behind by an interrupted conversion")
            _remove(entry)
    return restored


def recover_interrupted(target: Path) -> Optional[Path]:
    """Clean up after killed conversions; call it holding ``target``'s lock. Returns the entry ``target`` was just
    restored from (None when it was not).

    The leftovers of ``target`` are handled under its lock (:func:`_recover_locked`); those of other datasets in the
    same folder only when their process is gone and their own lock is free (else they belong to a run in progress).
    """
    raw_dir = target.parent
    restored = None
    for name, entries in _leftovers(raw_dir).items():
        if name == target.name:
            restored = _recover_locked(target, [e for e in entries if e[2] != os.getpid()])
            continue
        if any(process_alive(pid) for _, _, pid in entries):
            continue
        with try_exclusive_lock(dataset_lock_file(raw_dir, name)) as acquired:
            if acquired:
                _recover_locked(raw_dir / name, entries)
    return restored
