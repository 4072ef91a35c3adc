"""Reading outside input with a bound: JSON files and zip members are refused before they can exhaust memory or disk.

A zip member's declared size is checked before inflating, and the bytes actually inflated are counted while
streaming, so a member that lies about its size stops at the limit. JSON files (plans, dataset.json, manifests) are
refused above :data:`MAX_JSON_BYTES` before parsing.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Union

from nnunet_transfer.errors import NnUNetTransferError

__all__ = ["InputTooLargeError", "MAX_JSON_BYTES", "DEFAULT_MAX_MEMBER_BYTES", "read_json_bounded",
           "parse_json_bounded", "read_zip_member", "copy_zip_member"]

#: plans.json, dataset.json and manifests are kilobytes; 16 MiB leaves room for very many configurations
MAX_JSON_BYTES = 16 << 20
#: one member of a model zip (a checkpoint) may inflate to at most this many bytes unless the caller raises it
DEFAULT_MAX_MEMBER_BYTES = 8 << 30
_CHUNK = 1 << 20


class InputTooLargeError(NnUNetTransferError, ValueError):
    """A file or zip member from elsewhere is larger than it may be."""


def parse_json_bounded(data: bytes, source: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON bytes already read, refusing more than ``max_bytes`` and naming ``source`` when they are no JSON."""
    if len(data) > max_bytes:
        raise InputTooLargeError(f"refused {source}: {len(data):,} bytes, more than the {max_bytes:,} a JSON file of "
                                 "a model may have", file=source, fix="check that this is the right file")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise NnUNetTransferError(f"{source} is not valid JSON ({type(exc).__name__}: {exc})", file=source,
                                  fix="copy the file again from the model it belongs to") from exc


def read_json_bounded(path: Union[str, Path], max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read and parse a JSON file, refusing one larger than ``max_bytes`` before reading it."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise InputTooLargeError(f"refused {path}: {size:,} bytes, more than the {max_bytes:,} a JSON file of a "
                                 "model may have", file=path, fix="check that this is the right file")
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)
    return parse_json_bounded(data, str(path), max_bytes)


def _check_declared(info: zipfile.ZipInfo, source: str, max_bytes: int) -> None:
    if info.file_size > max_bytes:
        raise InputTooLargeError(
            f"refused {source}:{info.filename}: it inflates to {info.file_size:,} bytes, more than the limit of "
            f"{max_bytes:,}", file=source, fix="raise the limit (--max-member-gb) only for an archive you trust")


def copy_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dst: BinaryIO, source: str,
                    max_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> int:
    """Inflate one member into ``dst``, checking its declared size first and the bytes inflated while streaming;
    returns the number of bytes written."""
    _check_declared(info, source, max_bytes)
    written = 0
    with zf.open(info) as src:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                return written
            written += len(chunk)
            if written > max_bytes:
                raise InputTooLargeError(
                    f"refused {source}:{info.filename}: it inflates past {max_bytes:,} bytes (it declares "
                    f"{info.file_size:,})", file=source, fix="the archive is damaged or forged: do not use it")
            dst.write(chunk)


def read_zip_member(zf: zipfile.ZipFile, info: Union[str, zipfile.ZipInfo], source: str,
                    max_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> bytes:
    """The inflated bytes of one member, bounded as :func:`copy_zip_member`."""
    import io

    info = zf.getinfo(info) if isinstance(info, str) else info
    out = io.BytesIO()
    copy_zip_member(zf, info, out, source, max_bytes)
    return out.getvalue()

