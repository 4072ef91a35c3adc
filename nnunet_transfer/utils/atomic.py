"""Writing a file so that a crash never leaves it half-written (a temporary file next to it, then a rename), and
putting a staged folder in place of an existing one so that a failure leaves the old one where it was."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Union


def write_atomically(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def swap_into_place(staged: Union[str, Path], target: Union[str, Path], aside: Union[str, Path]) -> Path:
    """Rename ``target`` to ``aside``, then ``staged`` to ``target``; if the second rename fails, ``target`` is put
    back. Returns ``aside`` (the replaced entry, for the caller to remove once it is sure)."""
    os.rename(target, aside)
    try:
        os.rename(staged, target)
    except BaseException:
        os.rename(aside, target)
        raise
    return Path(aside)
