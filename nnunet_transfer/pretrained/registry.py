"""Registry of released pretrained checkpoints (one record per file, timm style) and their verification.

MedicalNet (Tencent, Med3D paper) released 3D ResNets in one archive, ``MedicalNet_pytorch_files`` (the
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
DATA_8 = "8 datasets"
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
