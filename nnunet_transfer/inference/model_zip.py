"""Extracting an exported model zip our way: every member checked, bounded and hashed before anything is installed.

nnU-Net's installer (``install_model_from_zip_file``) calls ``extractall``: no size limit, no checks. Instead
:func:`extract_checked_zip` opens the zip once and, for every member,

- refuses names that would land outside the target (absolute, ``..``, drive letters, backslashes) and code files
  (``.py``, shared libraries, scripts);
- checks the declared size and counts the bytes while inflating into the (private, hidden) staging folder, so a
  member that inflates past its limit stops there (``max_member_bytes``; JSON files: 16 MiB);
- hashes the bytes written and compares them with the manifest: every member when the manifest lists all of them
  (``members_sha256``, written by ``export`` since manifest version 2), the checkpoints otherwise;
- reads every checkpoint-like member (a name with ``.pth``/``.pt``/``.model``/``.ckpt`` anywhere in its suffixes, in
  any case: ``CHECKPOINT_FINAL.PTH``, ``checkpoint_final.pth.bak``) once with ``weights_only``, requiring it to be
  listed in the manifest;
- checks every ``plans.json`` as data (:mod:`~nnunet_transfer.pretrained.plans_check`) and parses every JSON file
  bounded;
- leaves out pickles (``postprocessing.pkl``: nnU-Net unpickles it fully and it references functions), with a
  warning.

Only when every member passed does the caller publish the staged folders.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Mapping, Sequence

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.pretrained.plans_check import check_foreign_plans
from nnunet_transfer.pretrained.safe_load import UnsafeCheckpointError, read_torch_file_data_only
from nnunet_transfer.utils.bounded_io import (DEFAULT_MAX_MEMBER_BYTES, MAX_JSON_BYTES, copy_zip_member,
                                              parse_json_bounded)

__all__ = ["MANIFEST_NAME", "ChecksumMismatchError", "CHECKPOINT_SUFFIXES", "CODE_SUFFIXES", "ZipMemberError", "extract_checked_zip", "is_checkpoint_name",
           "member_digests"]

CHECKPOINT_SUFFIXES = frozenset({".pth", ".pt", ".model", ".ckpt", ".tar", ".bin"})
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle"})
CODE_SUFFIXES = frozenset({".py", ".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib", ".sh", ".bat", ".exe"})


MANIFEST_NAME = "nnunet_transfer_export.json"


class ZipMemberError(NnUNetTransferError, ValueError):
    """A member of a model zip that must not be installed."""


class ChecksumMismatchError(NnUNetTransferError, RuntimeError):
    """An installed checkpoint's sha256 differs from the one recorded in the export manifest."""


def _suffixes(name: str) -> set:
    return {s.lower() for s in PurePosixPath(name).suffixes}


def is_checkpoint_name(name: str) -> bool:
    """True for any member nnU-Net or torch might unpickle as a checkpoint, whatever its case or later suffixes."""
    return bool(_suffixes(name) & CHECKPOINT_SUFFIXES)


def _check_name(name: str, zip_path: Path) -> PurePosixPath:
    path = PurePosixPath(name)
    if (name.startswith(("/", "\\")) or "\\" in name or ".." in path.parts or (path.parts and ":" in path.parts[0])
            or not path.parts):
        raise ZipMemberError(f"{zip_path}: member {name!r} would be written outside the results folder",
                             file=zip_path, fix="use a zip written by nnunet-transfer export")
    if _suffixes(name) & CODE_SUFFIXES:
        raise ZipMemberError(f"{zip_path}: member {name!r} is code; a model zip holds weights, plans and reports only",
                             file=zip_path, fix="do not use this zip")
    return path


def member_digests(zf: zipfile.ZipFile, skip: Sequence[str] = ()) -> Dict[str, str]:
    """``{member: sha256}`` of every file member of an open zip (but ``skip``), for the export manifest."""
    digests = {}
    for info in zf.infolist():
        if info.is_dir() or info.filename in skip:
            continue
        h = hashlib.sha256()
        with zf.open(info) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digests[info.filename] = h.hexdigest()
    return digests


class _HashingWriter:
    def __init__(self, f) -> None:
        self.f, self.hash = f, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.f.write(data)


def extract_checked_zip(zf: zipfile.ZipFile, zip_path: Path, staging: Path, manifest: Mapping[str, Any], *,
                        skip: Sequence[str] = (), max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                        trusted: Sequence[str] = ()) -> None:
    """Extract the members of ``zf`` (but ``skip``) into ``staging`` checking each (see the module docstring).

    Raises on the first member that fails (:class:`ChecksumMismatchError` for a hash that differs from the
    manifest's); the caller removes ``staging``.
    """
    all_listed = manifest.get("members_sha256")
    checkpoints = manifest.get("checkpoint_sha256", {})
    expected = dict(all_listed) if isinstance(all_listed, dict) else dict(checkpoints)
    seen = set()
    for info in zf.infolist():
        if info.is_dir() or info.filename in skip:
            continue
        name = info.filename
        rel = _check_name(name, zip_path)
        suffixes = _suffixes(name)
        if suffixes & PICKLE_SUFFIXES:
            warnings.warn(f"{zip_path}: {name} is a pickle that nnU-Net would load with a full unpickle; "
                          "it is not installed (predict-export applies a model's postprocessing from the "
                          "postprocessing.json next to it)", stacklevel=3)
            seen.add(name)
            continue
        checkpoint = is_checkpoint_name(name)
        if checkpoint and name not in checkpoints or isinstance(all_listed, dict) and name not in expected:
            if checkpoint:
                raise UnsafeCheckpointError(f"{zip_path}: checkpoint {name} is not listed in {MANIFEST_NAME}; "
                                            "nnU-Net would unpickle it unchecked", file=zip_path,
                                            fix="export the model again with nnunet-transfer export")
            raise ZipMemberError(f"{zip_path}: member {name} is not listed in {MANIFEST_NAME}", file=zip_path,
                                 fix="export the model again with nnunet-transfer export")
        is_json = ".json" in suffixes
        limit = min(max_member_bytes, MAX_JSON_BYTES) if is_json else max_member_bytes
        target = staging.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as f:
            writer = _HashingWriter(f)
            copy_zip_member(zf, info, writer, str(zip_path), limit)
        seen.add(name)
        if name in expected and writer.hash.hexdigest() != expected[name]:
            raise ChecksumMismatchError(
                f"{'checkpoint' if checkpoint else 'member'} {name} from {zip_path} is corrupted or was replaced: "
                f"sha256 {writer.hash.hexdigest()} but the manifest says {expected[name]}. Download or export the "
                "model zip again.", file=zip_path)
        if checkpoint:
            read_torch_file_data_only(target)  # our private copy, read once as data
        elif is_json:
            content = parse_json_bounded(target.read_bytes(), f"{zip_path}:{name}")
            if rel.name == "plans.json":
                check_foreign_plans(content, f"{zip_path}:{name}", trusted)
    missing = sorted(set(expected) - seen - set(skip))
    if missing:
        raise FileNotFoundError(f"{zip_path}: {missing[0]} listed in {MANIFEST_NAME} is not in the zip")
