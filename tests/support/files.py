"""File-tree helpers for tests that prove sources stay untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict


def tree_digest(root: Path) -> Dict[str, str]:
    """relative path -> sha1 of every file under root (hidden files included): proves sources stay untouched."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
