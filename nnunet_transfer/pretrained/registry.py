"""Registry of released pretrained checkpoints (one record per file, timm style) and their verification.

MedicalNet (Tencent, Med3D paper) released 3D ResNets in one archive, ``MedicalNet_pytorch_files`` (the
``pretrain/`` folder), downloadable from Google Drive or Tencent Weiyun as listed in the MedicalNet README:

- ``resnet_{10,18,34,50,101,152,200}.pth``: pretrained on 3DSeg-8 (8 public segmentation datasets,
  the Med3D paper);
- ``resnet_{10,18,34,50}_23dataset.pth``: pretrained on 23 datasets (README update of 2019-07-30).

Sizes are approximate (float32 tensor bytes of the encoder, in MB = 10^6 bytes); MedicalNet publishes no
checksums, so ``sha256`` is None until someone records the digest of a verified download
(:func:`verify_checkpoint` prints it). We never invent checksums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from nnunet_transfer.architectures.med3d import Med3DResNet, describe_architecture
from nnunet_transfer.errors import InvalidValueError, MissingEntryError, NnUNetTransferError
from nnunet_transfer.pretrained.medicalnet import infer_medicalnet_architecture, split_head
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError, load_state_dict_file
from nnunet_transfer.utils.hashing import sha256_of_file

__all__ = [
    "PretrainedCheckpoint",
    "VerificationReport",
    "MEDICALNET_CHECKPOINTS",
    "MEDICALNET_PROJECT_URL",
    "MEDICALNET_DOWNLOAD_SOURCES",
    "list_checkpoints",
    "get_checkpoint",
    "verify_checkpoint",
    "sha256_of_file",
]

MEDICALNET_PROJECT_URL = "https://github.com/Tencent/MedicalNet"
#: Download addresses of the archive holding all pretrained files, as listed in the MedicalNet README.
MEDICALNET_DOWNLOAD_SOURCES: tuple[str, ...] = (
    "https://drive.google.com/file/d/13tnSvXY7oDIEloNFiGTsjUIYfS3g3BfG/view?usp=sharing",  # Google Drive
    "https://share.weiyun.com/55sZyIx",  # Tencent Weiyun
)
DATA_8 = "8 datasets"
#: Failures of reading a file that verification reports instead of raising (unsafe, corrupt, missing, ...).
_READ_ERRORS = (NnUNetTransferError, OSError, ImportError)
DATA_23 = "23 datasets"


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """One released checkpoint: what it is, where it comes from, how to check it."""

    file_name: str
    depth: int
    shortcut_type: str
    pretraining_data: str
    size_mb: float
    sources: tuple[str, ...] = MEDICALNET_DOWNLOAD_SOURCES
    project_url: str = MEDICALNET_PROJECT_URL
    sha256: str | None = None
    architecture: str = "Med3DResNet"
    notes: str = ""

    @property
    def name(self) -> str:
        """Registry name: the file name without extension, e.g. ``resnet_50_23dataset``."""
        return Path(self.file_name).stem

    def build_encoder(self, in_channels: int = 1) -> Med3DResNet:
        """A fresh encoder with this checkpoint's architecture."""
        return Med3DResNet(depth=self.depth, in_channels=in_channels, shortcut_type=self.shortcut_type)


# Approximate sizes (MB) from the encoders' float32 tensor bytes; same architecture, same size.
_SIZE_MB = {10: 57.4, 18: 132.0, 34: 253.2, 50: 184.8, 101: 341.2, 152: 470.0, 200: 506.9}

MEDICALNET_CHECKPOINTS: tuple[PretrainedCheckpoint, ...] = tuple(
    [PretrainedCheckpoint(f"resnet_{d}.pth", d, s, DATA_8, _SIZE_MB[d],
                          notes="Med3D paper: pretrained on 3DSeg-8")
     for d, s in ((10, "B"), (18, "A"), (34, "A"), (50, "B"), (101, "B"), (152, "B"), (200, "B"))]
    + [PretrainedCheckpoint(f"resnet_{d}_23dataset.pth", d, s, DATA_23, _SIZE_MB[d],
                            notes="MedicalNet README update 2019-07-30: pretrained on 23 datasets")
       for d, s in ((10, "B"), (18, "A"), (34, "A"), (50, "B"))]
)


def list_checkpoints() -> list[PretrainedCheckpoint]:
    """All registered checkpoints."""
    return list(MEDICALNET_CHECKPOINTS)


def get_checkpoint(name: str) -> PretrainedCheckpoint:
    """Look a record up by file name (``resnet_50_23dataset.pth``) or name (``resnet_50_23dataset``)."""
    key = Path(name).name
    for rec in MEDICALNET_CHECKPOINTS:
        if key in (rec.file_name, rec.name):
            return rec
    known = ", ".join(r.file_name for r in MEDICALNET_CHECKPOINTS)
    raise MissingEntryError(f"no registered checkpoint named {name!r}; known files: {known}")


@dataclass
class VerificationReport:
    """Outcome of :func:`verify_checkpoint`: one ``(check, passed, detail)`` row per check."""

    path: str
    record: PretrainedCheckpoint | None
    sha256: str | None = None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

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
        return "\n".join(lines)


def verify_checkpoint(path: str | Path, record: PretrainedCheckpoint | str | None = None,
                      compute_sha256: bool = True) -> VerificationReport:
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
        state, head = split_head(load_state_dict_file(path))
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
                reference = rec.build_encoder(found.in_channels)
            expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
            got = {k: tuple(v.shape) for k, v in state.items()}
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
            detail = (f"all {len(expected)} keys and shapes match" if not (missing or extra or wrong) else
                      f"missing {missing[:3]}, extra {extra[:3]}, wrong shape {wrong[:3]}")
            report.add("keys and shapes", not (missing or extra or wrong), detail)

    if compute_sha256:
        report.sha256 = sha256_of_file(path)
        if rec is not None and rec.sha256 is not None:
            report.add("sha256", report.sha256 == rec.sha256.lower(),
                       f"expected {rec.sha256}, got {report.sha256}")
    return report
