"""``zoo verify``: is a file obtained elsewhere the released checkpoint a zoo record describes?

Checks, in order, each reported as one row (never raises on a bad file; the report says what failed):

1. the record: given (``record=``) or found by the file's name;
2. the file reads safely as data (``weights_only`` / JSON; nnU-Net results folders and zips through their reader);
3. its structure: the release format (nnssl: ``network_weights`` + ``nnssl_adaptation_plan`` of the record's
   architecture; results folders/zips: a fold checkpoint and plans) and the record's
   structure markers (tensor names every file of that architecture holds); MedicalNet files are checked key by key
   against our Med3D ResNet (:func:`nnunet_transfer.transfer.verify.verify_checkpoint`);
4. its size, when the record knows it;
5. its sha256 when the release publishes one; otherwise the digest is reported, and the verdict rests on the
   structure checks alone (a file of the right architecture but other weights passes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional, Union

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.transfer.verify import VerificationReport, verify_checkpoint
from nnunet_transfer.utils.hashing import sha256_of_file
from nnunet_transfer.zoo import find_record_for_file, get_record
from nnunet_transfer.zoo.record import ZooRecord

__all__ = ["verify_file"]

#: failures of reading a file that verification reports instead of raising
_READ_ERRORS = (NnUNetTransferError, OSError, ImportError, ValueError)


def _tensor_names(path: Path, report: VerificationReport) -> Optional[List[str]]:
    """Read the file safely; the names of the tensors it offers, or None (reported) when it cannot be read."""
    from nnunet_transfer.pretrained.safe_load import find_state_dict, read_checkpoint_file
    from nnunet_transfer.pretrained.source import read_source_weights

    try:
        if path.is_dir() or path.suffix == ".zip":
            source = read_source_weights(path)
            report.add("loads safely", True, f"{source.family}: {len(source.tensors)} tensors"
                                             + (", with plans" if source.reading.plans is not None
                                                else ", no plans.json"))
            return list(source.tensors)
        raw = read_checkpoint_file(path)
        names = list(find_state_dict(raw, source=str(path)))
    except _READ_ERRORS as exc:  # reported, not swallowed: the report carries the message and ok=False
        report.add("loads safely", False, f"{type(exc).__name__}: {exc}")
        return None
    report.add("loads safely", True, f"{len(names)} tensors")
    _check_top_level(raw, report)
    return names


def _check_top_level(raw: Any, report: VerificationReport) -> None:
    """The release format's wrapper as the record states it (nnssl files: their adaptation plan)."""
    record = report.record
    fmt = record.format
    if fmt.startswith("nnssl"):
        plan = raw.get("nnssl_adaptation_plan") if isinstance(raw, Mapping) else None
        has = isinstance(plan, Mapping) and "network_weights" in raw
        arch = str((plan or {}).get("architecture_plans", {}).get("arch_class_name", "?")) if has else "?"
        expected = str(record.details.get("arch_class", "")).split("|")
        ok = has and any(name.lower() in arch.lower() for name in expected)
        report.add("release format", ok, f"network_weights + nnssl_adaptation_plan, architecture {arch}"
                   if has else "no nnssl_adaptation_plan / network_weights at the top level")


def _check_markers(names: List[str], report: VerificationReport) -> None:
    missing = [m for m in report.record.markers
               if not any(alt in name for alt in m.split("|") for name in names)]
    if report.record.markers:
        report.add("architecture", not missing,
                   f"tensor names of {report.record.architecture} found" if not missing
                   else f"no tensor named like {', '.join(repr(m) for m in missing)}: not a "
                        f"{report.record.architecture} checkpoint")


def verify_file(path: Union[str, Path], record: Union[ZooRecord, str, None] = None,
                compute_sha256: bool = True) -> VerificationReport:
    """Check ``path`` against its zoo record (``record`` or the one its file name identifies); see the module doc."""
    path = Path(path)
    if record is None:
        rec = find_record_for_file(path)
    else:
        try:
            rec = record if isinstance(record, ZooRecord) else get_record(record)
        except NnUNetTransferError as exc:
            report = VerificationReport(path=str(path), record=None)
            report.add("registered", False, str(exc))
            return report
    if rec is not None and rec.family == "MedicalNet":
        return verify_checkpoint(path, rec.file_name, compute_sha256=compute_sha256)
    report = VerificationReport(path=str(path), record=rec)
    if rec is None:
        report.add("registered", False, f"no zoo record releases a file named {path.name!r}; pass --record NAME "
                                        "(`nnunet-transfer zoo list` shows the names)")
        return report
    report.add("registered", True, f"{rec.name}: {rec.description or rec.architecture}")
    names = _tensor_names(path, report)
    if names is None:
        return report
    _check_markers(names, report)
    if rec.size_bytes is not None and path.is_file():
        size = path.stat().st_size
        report.add("size", size == rec.size_bytes, f"{size} bytes, record says {rec.size_bytes}")
    if compute_sha256 and path.is_file():
        report.sha256 = sha256_of_file(path)
        if rec.checksum_published:
            report.add("sha256", report.sha256 == rec.sha256.lower(), f"expected {rec.sha256}, got {report.sha256}")
        else:
            report.notes.append("sha256 not published by the release: only the structure was checked (record the "
                                "digest above once the file is known to be the official one)")
    return report
