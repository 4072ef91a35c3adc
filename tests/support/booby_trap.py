"""A booby-trapped pickle payload: the stand-in for a malicious checkpoint in every untrusted-file test."""

from __future__ import annotations

import os
from pathlib import Path


class Payload:
    """Unpickling this creates the folder ``marker``: the proof that a file's code ran. Tests assert it never
    appears (and, where they prove the trap is real, that a full unpickle creates it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))
