"""SHA-256 of files and streams (checkpoint checksums), read in chunks so large weights never sit in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO, Union

CHUNK_SIZE = 1 << 20


def sha256_of_stream(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> str:
    """Hex SHA-256 digest of everything left in a binary stream (a file, a zip member ...)."""
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(chunk_size), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_of_file(path: Union[str, Path], chunk_size: int = CHUNK_SIZE) -> str:
    """Hex SHA-256 digest of a file."""
    with open(path, "rb") as fh:
        return sha256_of_stream(fh, chunk_size)
