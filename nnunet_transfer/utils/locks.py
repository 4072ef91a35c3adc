"""One writer at a time per dataset or model: an exclusive, non-blocking ``flock`` on a lock file, and the helpers
that tell leftovers of killed runs (named after their process id) from those of runs still going.

``flock`` locks belong to the open file and vanish when the process ends, also with SIGKILL, so a killed run never
leaves a stale lock behind. The holder removes its lock file when it is done (a file a killed run left is empty of
meaning and reused); whoever locks a file checks afterwards that it is still the one at the path, so removing it
never lets two runs in at once.
A second run that finds the lock held refuses at once with one line naming the holder: it never waits silently and
never writes over the first run's result.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator, Optional

from nnunet_transfer.errors import BusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking (nnU-Net's supported platforms all have flock)
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_SUFFIX", "lock_file_for", "exclusive_lock", "try_exclusive_lock", "process_alive", "pid_in_name"]

#: the ending of lock files (hidden files next to what they protect: ``.Dataset005.nnunet_transfer.lock``)
LOCK_SUFFIX = ".nnunet_transfer.lock"


def lock_file_for(folder: Path, key: str) -> Path:
    """The lock file of ``key`` (a dataset id, a model) in ``folder``; ``key`` may come from a file from elsewhere,
    so it is reduced to a plain file name (no separators, no leading dots)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key).lstrip(".")[:120] or "unnamed"
    return folder / f".{safe}{LOCK_SUFFIX}"


def _lock(lock_file: Path) -> Optional[int]:
    """An open descriptor holding ``lock_file``'s lock, or None when another process holds it."""
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the file may have been removed (and replaced) by its previous holder between open and flock
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (process {text})" if text.isdigit() else ""


@contextlib.contextmanager
def try_exclusive_lock(lock_file: Path) -> Iterator[bool]:
    """Hold ``lock_file``'s lock for the ``with`` block when it is free (yields True); yields False when another
    process holds it (then nothing is locked)."""
    if fcntl is None:
        yield True
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(lock_file)
    if fd is None:
        yield False
        return
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_file)  # still holding the lock: nobody else can hold this file now
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def exclusive_lock(lock_file: Path, what: str) -> Iterator[None]:
    """Hold ``lock_file``'s lock for the ``with`` block; :class:`BusyError` naming ``what`` when another run holds
    it."""
    with try_exclusive_lock(lock_file) as acquired:
        if not acquired:
            holder = ""
            with contextlib.suppress(OSError):
                fd = os.open(lock_file, os.O_RDONLY)
                try:
                    holder = _holder(fd)
                finally:
                    os.close(fd)
            raise BusyError(f"another nnunet-transfer run{holder} is writing {what} right now", file=lock_file,
                            fix="wait until it has finished and run this command again (the lock is released when "
                                "that run ends, also when it is killed)")
        yield


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_PID = re.compile(r"-(\d+)(?:-[0-9a-f]+)?$")


def pid_in_name(name: str) -> Optional[int]:
    """The process id a leftover's name ends with (``...-PID`` or ``...-PID-HEX``), None when there is none."""
    m = _PID.search(name)
    return int(m.group(1)) if m else None
