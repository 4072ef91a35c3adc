"""Verifying a downloaded MedicalNet checkpoint against its registry record and our Med3D ResNet.

The records (what was released, by whom, with which architecture) are data in
:mod:`nnunet_transfer.pretrained.registry`; checking that a file's keys and shapes are those of the network that will
take them needs the network, so it lives here. The file is read once: its sha256 is that of the bytes checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from nnunet_transfer.architectures.med3d import Med3DResNet, describe_architecture
from nnunet_transfer.errors import InvalidValueError, NnUNetTransferError
from nnunet_transfer.pretrained.formats.base import SourceWeights
from nnunet_transfer.pretrained.formats.medicalnet import split_head
from nnunet_transfer.pretrained.registry import PretrainedCheckpoint, get_checkpoint
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError
from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.transfer.medicalnet import infer_medicalnet_architecture

__all__ = ["VerificationReport", "verify_checkpoint"]

#: Failures of reading a file that verification reports instead of raising (unsafe, corrupt, missing, ...).
_READ_ERRORS = (NnUNetTransferError, OSError, ImportError)


@dataclass
class VerificationReport:
    """Outcome of :func:`verify_checkpoint`: one ``(check, passed, detail)`` row per check."""

    path: str
    record: PretrainedCheckpoint | None
    sha256: str | None = None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    #: what the checks could not establish (e.g. no published checksum), shown after them
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(passed for _, passed, _ in self.checks)

    def add(self, check: str, passed: bool, detail: str) -> bool:
        self.checks.append((check, passed, detail))
        return passed

    def raise_if_failed(self) -> None:
        """Raise ``ValueError`` with the failed checks if any check failed."""
        if not self.ok:
            failed = "; ".join(f"{c}: {d}" for c, p, d in self.checks if not p)
            raise InvalidValueError(f"checkpoint {self.path} failed verification: {failed}")

    def __str__(self) -> str:
        title = self.record.file_name if self.record else "(unregistered)"
        width = max([len(c) for c, _, _ in self.checks] + [5])
        lines = [f"verify {self.path} as {title}: {'OK' if self.ok else 'FAILED'}"]
        lines += [f"  {'PASS' if p else 'FAIL'}  {c:<{width}}  {d}" for c, p, d in self.checks]
        if self.sha256:
            lines.append(f"  sha256 {self.sha256}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def verify_checkpoint(path: str | Path, record: PretrainedCheckpoint | str | None = None,
                      compute_sha256: bool = True, weights: SourceWeights | None = None) -> VerificationReport:
    """Check that a downloaded checkpoint is the file its record describes; never raises on a bad file.

    Checks, in order: the file has a registry record (by file name, or ``record`` given explicitly); it
    loads safely (``weights_only``); its keys describe the record's depth and shortcut type; its keys and
    shapes equal those of our :class:`Med3DResNet` exactly; its SHA-256 equals the record's (when one is
    recorded; otherwise the digest is reported so it can be recorded). Call ``report.raise_if_failed()`` to
    turn failures into an exception.
    """
    path = Path(path)
    report = VerificationReport(path=str(path), record=None)
    try:
        rec = record if isinstance(record, PretrainedCheckpoint) else get_checkpoint(record or path.name)
    except KeyError as exc:
        report.add("registered", False,
                   f"{exc.args[0]}; pass --record NAME (Python: record='NAME') if you renamed the file")
        rec = None
    else:
        report.record = rec
        report.add("registered", True, f"{describe_architecture(rec.depth, rec.shortcut_type)}, "
                                       f"pretrained on {rec.pretraining_data}")

    try:
        weights = weights if weights is not None else read_source_weights(path)  # read once
        state, head = split_head(weights.tensors)
        head = head + [k for k in weights.filtered if k not in head]
    except _READ_ERRORS as exc:  # reported, not swallowed: the report carries the message and ok=False
        report.add("loads safely", False, f"{type(exc).__name__}: {exc}")
        return report
    n_head = len(head)
    report.add("loads safely", True, f"{len(state)} tensors" + (f" (+{n_head} head tensors ignored)" if n_head else ""))

    try:
        found = infer_medicalnet_architecture(state, source=str(path))
    except CheckpointFormatError as exc:
        report.add("architecture", False, f"{type(exc).__name__}: {exc}")
        return report
    if rec is None:
        report.add("architecture", found.depth is not None, f"looks like {found}")
    else:
        same = (found.depth, found.shortcut_type) == (rec.depth, rec.shortcut_type)
        report.add("architecture", same, f"file looks like {found}; record says "
                                         f"{describe_architecture(rec.depth, rec.shortcut_type)}")
        if same:
            with torch.device("meta"):  # shapes only: no memory, no initialisation
                reference = Med3DResNet(depth=rec.depth, in_channels=found.in_channels,
                                        shortcut_type=rec.shortcut_type)
            expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
            got = {k: tuple(v.shape) for k, v in state.items()}
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
            detail = (f"all {len(expected)} keys and shapes match" if not (missing or extra or wrong) else
                      f"missing {missing[:3]}, extra {extra[:3]}, wrong shape {wrong[:3]}")
            report.add("keys and shapes", not (missing or extra or wrong), detail)

    if compute_sha256:
        report.sha256 = weights.sha256
        if rec is not None and rec.sha256 is not None:
            report.add("sha256", report.sha256 == rec.sha256.lower(),
                       f"expected {rec.sha256}, got {report.sha256}")
    return report
