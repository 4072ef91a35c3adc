"""File-tree helpers: digests that prove sources stay untouched, input folders for nnUNetv2_predict."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Dict, Sequence


def tree_digest(root: Path) -> Dict[str, str]:
    """relative path -> sha1 of every file under root (hidden files included): proves sources stay untouched."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def input_folder(images: Sequence[Path], folder: Path) -> Path:
    """A new ``folder`` holding copies of ``images`` (nnUNetv2_predict predicts every image of its input folder)."""
    folder.mkdir()
    for image in images:
        shutil.copy(image, folder / image.name)
    return folder
