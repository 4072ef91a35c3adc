"""MedicalNet's released checkpoints, viewed as :class:`PretrainedCheckpoint` (depth, shortcut type) for the Med3D
encoders.

The records themselves are entries of the model zoo's one data module (:mod:`nnunet_transfer.zoo.catalogue`, family
``MedicalNet``). MedicalNet (Tencent, Med3D paper) released 3D ResNets in one archive, ``MedicalNet_pytorch_files`` (the
``pretrain/`` folder), downloadable from Google Drive or Tencent Weiyun as listed in the MedicalNet README:

- ``resnet_{10,18,34,50,101,152,200}.pth``: pretrained on 3DSeg-8 (8 public segmentation datasets,
  the Med3D paper);
- ``resnet_{10,18,34,50}_23dataset.pth``: pretrained on 23 datasets (README update of 2019-07-30).

Sizes are approximate (float32 tensor bytes of the encoder, in MB = 10^6 bytes); MedicalNet publishes no
checksums, so ``sha256`` is None until someone records the digest of a verified download
(:func:`nnunet_transfer.transfer.verify.verify_checkpoint` prints it). We never invent checksums.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnunet_transfer.errors import MissingEntryError


__all__ = [
    "PretrainedCheckpoint",
    "MEDICALNET_CHECKPOINTS",
    "MEDICALNET_PROJECT_URL",
    "MEDICALNET_DOWNLOAD_SOURCES",
    "list_checkpoints",
    "get_checkpoint",
]

MEDICALNET_PROJECT_URL = "https://github.com/Tencent/MedicalNet"
#: Download addresses of the archive holding all pretrained files, as listed in the MedicalNet README.
MEDICALNET_DOWNLOAD_SOURCES: tuple[str, ...] = (
    "https://drive.google.com/file/d/13tnSvXY7oDIEloNFiGTsjUIYfS3g3BfG/view?usp=sharing",  # Google Drive
    "https://share.weiyun.com/55sZyIx",  # Tencent Weiyun
)
MEDICALNET_FAMILY = "MedicalNet"


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


def _from_zoo(record) -> PretrainedCheckpoint:
    """A MedicalNet zoo record as a :class:`PretrainedCheckpoint`."""
    size_mb = float(record.size_note.split()[1]) if record.size_note.startswith("about ") else 0.0
    return PretrainedCheckpoint(
        record.file_name, int(record.details["depth"]), str(record.details["shortcut_type"]),
        str(record.details["pretraining_data"]), size_mb, project_url=MEDICALNET_PROJECT_URL,
        sha256=record.sha256 if record.checksum_published else None, notes=record.description)


def _medicalnet_checkpoints() -> tuple:
    from nnunet_transfer.zoo.catalogue import RECORDS

    return tuple(_from_zoo(r) for r in RECORDS if r.family == MEDICALNET_FAMILY)


#: MedicalNet's released checkpoints (the zoo's records of that family)
MEDICALNET_CHECKPOINTS: tuple[PretrainedCheckpoint, ...] = _medicalnet_checkpoints()


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
