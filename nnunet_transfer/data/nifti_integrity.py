"""Is a NIfTI file complete, and are its voxels finite? Checks SimpleITK does not make.

SimpleITK reads a truncated ``.nii.gz`` or ``.nii`` without an error (the missing voxels become 0), and its NIfTI
reader turns NaN and inf voxels into 0, so neither shows up in the array a converter or an evaluation looks at.
:func:`nifti_problem` therefore reads the file itself: the header (with nibabel, which nnU-Net already depends on)
gives the data offset, voxel type and shape, hence the expected byte count; the whole gzip stream is decompressed
in chunks (which verifies its CRC and length) and counted; floating-point voxels are checked to be finite on the
way. Memory stays at one chunk.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from nnunet_transfer.errors import NnUNetTransferError

__all__ = ["DamagedImageError", "nifti_problem", "check_nifti"]

CHUNK = 1 << 22


#: compressed bytes read from the file at a time
READ_SIZE = 1 << 20


def _gzip_blocks(stream) -> Iterator[bytes]:
    """The decompressed content of a gzip file object in blocks of at most :data:`CHUNK` bytes.

    zlib directly (``wbits=31``: gzip header, CRC-32 and length verified for every member), which is what
    ``gzip.open`` does too, without its per-block overhead (about a quarter of the check's time on CT volumes).
    Like ``gzip.open``: concatenated members are read one after the other, zero padding after a member is
    skipped, anything else is an error, and a stream that ends inside a member raises ``EOFError``.
    """
    decompressor = None  # of the member being read; None before the first and between members
    members = 0
    while data := stream.read(READ_SIZE):
        while data:
            if decompressor is None:
                if members:
                    data = data.lstrip(b"\0")  # padding after a member
                    if not data:
                        break
                decompressor = zlib.decompressobj(31)
                members += 1
            block = decompressor.decompress(data, CHUNK)
            if block:
                yield block
            if decompressor.eof:
                data, decompressor = decompressor.unused_data, None
            else:
                data = decompressor.unconsumed_tail
                while not data and len(block) == CHUNK:  # output was capped: zlib may hold more
                    block = decompressor.decompress(b"", CHUNK)
                    if block:
                        yield block
                    if decompressor.eof:
                        data, decompressor = decompressor.unused_data, None
                        break
    if decompressor is not None:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")


def _blocks(path: Path) -> Iterator[bytes]:
    """The (decompressed, for ``.gz``) content of ``path`` in blocks of at most :data:`CHUNK` bytes."""
    with open(path, "rb") as stream:
        if path.name.endswith(".gz"):
            yield from _gzip_blocks(stream)
        else:
            while block := stream.read(CHUNK):
                yield block


#: what reading a damaged gzip stream raises
STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)


def _damaged(path: Path, error: BaseException) -> str:
    return (f"{path} is damaged or truncated ({type(error).__name__}: {error}); copy or download it again"
            + (f" (gzip -t {path.name} shows the same)" if path.name.endswith(".gz") else ""))


def _stream_problem(path: Path) -> Optional[str]:
    """The damage of ``path``'s (gzip) stream, read to its end, or None."""
    try:
        for _ in _blocks(path):
            pass
    except STREAM_ERRORS as e:
        return _damaged(path, e)
    return None


def nifti_problem(path: Union[str, Path], check_finite: bool = True) -> Optional[str]:
    """A one-line problem naming ``path`` (truncated, damaged gzip stream, NaN/inf voxels), or None when the file
    is complete. Files that are not ``.nii``/``.nii.gz`` are not checked (None)."""
    import nibabel as nib

    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        return None
    try:
        proxy = nib.load(str(path)).dataobj
        offset, dtype, shape = int(proxy.offset), np.dtype(proxy.dtype), tuple(proxy.shape)
    except Exception as e:  # nibabel raises many types for a bad header; the message names the file either way
        return _stream_problem(path) or (f"cannot read the NIfTI header of {path} ({type(e).__name__}: {e}); is it "
                                         "a complete NIfTI file?")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    finite = check_finite and dtype.kind == "f"
    position, carry, bad = 0, b"", 0
    try:
        for block in _blocks(path):
            start = position
            position += len(block)
            if finite and position > offset:
                data = carry + block[max(0, offset - start):]
                usable = len(data) - len(data) % dtype.itemsize
                values = np.frombuffer(data[:usable], dtype=dtype)
                bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                carry = data[usable:]
    except STREAM_ERRORS as e:
        return _damaged(path, e)
    if position < expected:
        return (f"{path} is truncated: its header describes {expected:,} bytes ({'x'.join(map(str, shape))} voxels "
                f"of {dtype}) but it holds {position:,}; copy or download it again")
    if bad:
        return (f"{path} contains {bad:,} NaN or infinite voxels; replace them (e.g. by the minimum intensity)")
    return None


class DamagedImageError(NnUNetTransferError, ValueError):
    """An image or label file is truncated, damaged or holds NaN/inf voxels."""


def check_nifti(path: Union[str, Path], check_finite: bool = True) -> None:
    """Raise :class:`DamagedImageError` with :func:`nifti_problem`'s message, if any."""
    problem = nifti_problem(path, check_finite)
    if problem is not None:
        raise DamagedImageError(problem, file=path)
