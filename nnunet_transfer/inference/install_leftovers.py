"""What a killed export or install leaves behind, found and cleaned (or reported) by the next run.

Every temporary entry carries the id of the process that made it: ``model.zip.partial-PID`` (an export being
written), ``.nnunet_transfer_install-PID-*`` (a zip being extracted and verified in ``nnUNet_results``) and
``.NAME.replaced-PID-*`` (a model set aside while a new one is renamed into place). The next run removes those whose
process is gone; a model set aside by a run killed between the two renames of replacing it is renamed back, so it is
never lost. Entries of a process that still runs are reported, not touched.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import List

from nnunet_transfer.utils.locks import process_alive

__all__ = ["partial_zip", "clean_partial_zips", "install_staging_prefix", "clean_install_staging", "aside_name",
           "recover_replaced_models"]

_INSTALL = re.compile(r"^\.nnunet_transfer_install-(?:(\d+)-)?")
_REPLACED = re.compile(r"^\.(.+)\.replaced-(?:(\d+)-)?[0-9a-f]+$")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _remove(entry: Path) -> None:
    if entry.is_symlink() or not entry.is_dir():
        entry.unlink()
    else:
        shutil.rmtree(entry)


def partial_zip(output_zip: Path) -> Path:
    """The file an export writes before it is complete and renamed to ``output_zip``."""
    return output_zip.with_name(f"{output_zip.name}.partial-{os.getpid()}")


def clean_partial_zips(output_zip: Path) -> List[Path]:
    """Remove ``output_zip.partial[-PID]`` files of exports that were killed; report those of running ones."""
    handled = []
    if not output_zip.parent.is_dir():
        return handled
    for entry in sorted(output_zip.parent.glob(f"{output_zip.name}.partial*")):
        tail = entry.name[len(output_zip.name) + len(".partial"):]
        pid = int(tail[1:]) if tail[1:].isdigit() and tail.startswith("-") else None
        if tail and pid is None:
            continue  # not ours
        if pid is not None and pid != os.getpid() and process_alive(pid):
            _say(f"note: {entry} belongs to an export still running (process {pid}); left as it is")
            continue
        _say(f"removing {entry}, left behind by an interrupted export")
        entry.unlink()
        handled.append(entry)
    return handled


def install_staging_prefix() -> str:
    """The name prefix of this process's install staging folders."""
    return f".nnunet_transfer_install-{os.getpid()}-"


def clean_install_staging(results: Path) -> List[Path]:
    """Remove install staging folders in ``results`` of installs that were killed; report those without a process
    id (older versions) or of a process that still runs."""
    handled = []
    if not results.is_dir():
        return handled
    for entry in sorted(results.iterdir()):
        m = _INSTALL.match(entry.name)
        if not m:
            continue
        pid = int(m.group(1)) if m.group(1) else None
        if pid is None:
            _say(f"note: {entry} was left by an interrupted install; nothing of it is installed, delete it")
            continue
        if pid != os.getpid() and process_alive(pid):
            continue  # an install in progress
        _say(f"removing {entry}, left behind by an interrupted install")
        _remove(entry)
        handled.append(entry)
    return handled


def aside_name(target: Path, token: str) -> Path:
    """Where an existing model is set aside while its replacement is renamed into place."""
    return target.with_name(f".{target.name}.replaced-{os.getpid()}-{token}")


def recover_replaced_models(dataset_dir: Path) -> List[Path]:
    """Call holding the dataset's lock: a model set aside by a killed install is renamed back when its place is empty
    (the kill came between the two renames), else removed (the new one was in place)."""
    handled = []
    if not dataset_dir.is_dir():
        return handled
    for entry in sorted(dataset_dir.iterdir()):
        m = _REPLACED.match(entry.name)
        if not m:
            continue
        pid = int(m.group(2)) if m.group(2) else None
        if pid == os.getpid():
            continue
        target = dataset_dir / m.group(1)
        if not (target.exists() or target.is_symlink()):
            _say(f"restoring {target} from {entry.name}, set aside by an install that was interrupted while "
                 "replacing it")
            os.rename(entry, target)
        else:
            _say(f"removing {entry}, left behind by an interrupted install (the model that replaced it is in place)")
            _remove(entry)
        handled.append(entry)
    return handled
