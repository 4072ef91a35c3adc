"""The integrity check's own gzip reader reads what ``gzip.open`` reads and refuses what it refuses."""

from __future__ import annotations

import gzip
import io
import zlib

import numpy as np
import pytest

from nnunet_transfer.data import nifti_integrity
from nnunet_transfer.data.nifti_integrity import STREAM_ERRORS, _gzip_blocks


def _ours(data: bytes) -> bytes:
    return b"".join(_gzip_blocks(io.BytesIO(data)))


def _gzip_module(data: bytes) -> bytes:
    with gzip.open(io.BytesIO(data), "rb") as stream:
        return stream.read()


_PAYLOAD = np.random.default_rng(0).integers(0, 4, size=300_000, dtype=np.uint8).tobytes() + bytes(2_000_000)
_ONE = gzip.compress(_PAYLOAD, mtime=0)
_CASES = {
    "one member": _ONE,
    "two members": _ONE + gzip.compress(b"tail", mtime=0),
    "zero padding": _ONE + bytes(1000),
    "empty payload": gzip.compress(b"", mtime=0),
}
_DAMAGED = {
    "truncated": _ONE[: len(_ONE) // 2],
    "no trailer": _ONE[:-8],
    "bad crc": _ONE[:-8] + bytes(4) + _ONE[-4:],
    "flipped byte": _ONE[:200] + bytes([_ONE[200] ^ 0xFF]) + _ONE[201:],
    "trailing garbage": _ONE + b"garbage!",
    "not gzip": b"not a gzip file at all",
}


@pytest.mark.parametrize("name", list(_CASES))
@pytest.mark.parametrize("chunk", [1 << 22, 4096])  # small blocks: output capped inside a member
def test_same_content_as_gzip_open(name, chunk, monkeypatch):
    monkeypatch.setattr(nifti_integrity, "CHUNK", chunk)
    monkeypatch.setattr(nifti_integrity, "READ_SIZE", 777)  # members end inside a read
    data = _CASES[name]
    assert _ours(data) == _gzip_module(data)
    assert all(len(b) <= chunk for b in _gzip_blocks(io.BytesIO(data)))


@pytest.mark.parametrize("name", list(_DAMAGED))
def test_damaged_streams_raise_as_gzip_open_does(name):
    data = _DAMAGED[name]
    with pytest.raises(STREAM_ERRORS):
        _gzip_module(data)
    with pytest.raises((EOFError, zlib.error)):
        _ours(data)
