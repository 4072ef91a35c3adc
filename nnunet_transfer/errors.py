"""The one exception type for failures the user can fix, and the close-match helper its messages use.

Everything nnunet-transfer raises because of the user's files, folders or arguments (a damaged checkpoint, a
booby-trapped pickle, an existing dataset that would be replaced, a misspelled trainer name ...) is an
:class:`NnUNetTransferError`. It carries the file concerned and the fix, and the CLI prints it as one line
(``nnunet-transfer CMD: error: ...``) without a traceback. Any other exception is a bug and keeps its traceback.

Older, more specific error classes (``UnsafeCheckpointError``, ``ConversionError`` ...) derive from it, so one
``except NnUNetTransferError`` catches every user-facing failure.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable, List, Optional, Union

__all__ = ["NnUNetTransferError", "MissingEntryError", "InvalidValueError", "NotApplicableError", "WrongKindError",
           "BusyError", "close_matches", "did_you_mean"]


class NnUNetTransferError(Exception):
    """A failure the user can fix. ``file``: the file or folder concerned (or None); ``fix``: what to do.

    ``str(error)`` is the whole message: the problem, then ``fix`` when it is not already part of it.
    """

    def __init__(self, message: str, *, file: Optional[Union[str, Path]] = None, fix: Optional[str] = None) -> None:
        self.file = None if file is None else Path(file)
        self.fix = fix
        text = message if not fix or fix in message else f"{message.rstrip('. ')}. Fix: {fix}"
        super().__init__(text)

    def __str__(self) -> str:  # the message as is, also for the KeyError subclasses (KeyError would quote it)
        return str(self.args[0]) if self.args else ""


class MissingEntryError(NnUNetTransferError, KeyError):
    """A name the user gave (a configuration, a case, a record) is not in the file that should hold it."""


class InvalidValueError(NnUNetTransferError, ValueError):
    """A value the user gave (an option, an argument) or that a user's file holds is not acceptable."""


class NotApplicableError(NnUNetTransferError, RuntimeError):
    """The input is well-formed but cannot serve what was asked (a checkpoint that covers too little of the network,
    plans of another architecture than a trainer needs, a GPU that is not there)."""


class WrongKindError(NnUNetTransferError, TypeError):
    """A name or file the user gave resolves to something of the wrong kind (a class that is not a planner ...)."""


class BusyError(NnUNetTransferError, RuntimeError):
    """Another run is writing the same dataset or model right now (its lock is held)."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> List[str]:
    """Candidates that look like ``name`` (case-insensitive), best first."""
    candidates = sorted(set(candidates))
    lowered = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[f] for f in found]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'X' or 'Y'?)`` when there are close matches, else an empty string."""
    matches = close_matches(name, candidates)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"
