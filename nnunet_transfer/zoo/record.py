"""What the model zoo knows about one released checkpoint: where it is, what it is, what it expects.

A :class:`ZooRecord` is pure data. The records themselves live in one data module,
:mod:`nnunet_transfer.zoo.catalogue`: adding a released checkpoint is adding one entry there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

#: what ``sha256`` says when the release publishes no checksum (verification then checks the file's structure)
NOT_PUBLISHED = "not published"


@dataclass(frozen=True)
class Intensity:
    """The intensity normalisation a model was pretrained with.

    ``kind``:

    - ``"zscore"``: per image, ``(x - mean) / std`` (nnU-Net's ``ZScoreNormalization``);
    - ``"window"``: ``(clip(x, lower, upper) - subtract) / divide``, a fixed CT window (HU) mapped onto a fixed
      range; nnU-Net's ``CTNormalization`` computes exactly this when the plans' intensity properties are
      ``percentile_00_5 = lower``, ``percentile_99_5 = upper``, ``mean = subtract``, ``std = divide``;
    - ``"ct"``: nnU-Net's ``CTNormalization`` with the statistics of the pretraining dataset (nnU-Net family).
    """

    kind: str
    lower: Optional[float] = None
    upper: Optional[float] = None
    subtract: Optional[float] = None
    divide: Optional[float] = None
    #: how the pretraining code did it, in words (shown by ``zoo show``)
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("zscore", "window", "ct"):
            raise ValueError(f"unknown intensity normalisation kind {self.kind!r}")
        if self.kind == "window" and None in (self.lower, self.upper, self.subtract, self.divide):
            raise ValueError("a window normalisation needs lower, upper, subtract and divide")

    def describe(self) -> str:
        if self.kind == "zscore":
            text = "z-score per image"
        elif self.kind == "ct":
            text = "nnU-Net CT normalisation (clip to the 0.5/99.5 percentiles of the pretraining data, z-score)"
        else:
            lo, hi = self.output_range()
            text = (f"HU clipped to [{self.lower:g}, {self.upper:g}], then (x - ({self.subtract:g})) / "
                    f"{self.divide:g}: range [{lo:g}, {hi:g}]")
        return f"{text}; {self.note}" if self.note else text

    @property
    def plans_tag(self) -> str:
        """The suffix of the plans (and data) that ``set-pretrained --match-normalisation`` writes for it."""
        return f"hu{self.lower:g}_{self.upper:g}" if self.kind == "window" else self.kind

    def output_range(self) -> Tuple[float, float]:
        """The output range of a window normalisation."""
        return ((self.lower - self.subtract) / self.divide, (self.upper - self.subtract) / self.divide)


@dataclass(frozen=True)
class ExpectedInput:
    """The input a pretrained model was trained on."""

    modality: str
    #: target spacing in mm (nnU-Net's axis order: z, y, x), None when the pretraining did not resample to one
    spacing: Optional[Tuple[float, float, float]]
    intensity: Intensity
    channels: int = 1


@dataclass(frozen=True)
class ZooRecord:
    """One released checkpoint."""

    #: registry name, ``<family>-<variant>``
    name: str
    family: str
    #: the file name as released (used to recognise a downloaded file)
    file_name: str
    #: direct download address, or None when the release is only reachable through a web page (``page``)
    url: Optional[str]
    #: where the release is described (README, model card, release page)
    page: str
    #: lowercase hex digest, or :data:`NOT_PUBLISHED`
    sha256: str
    #: file size in bytes when known, else None (``size_note`` says what is known)
    size_bytes: Optional[int]
    license: str
    citation: str
    #: the ``plan-arch`` name of the network the checkpoint belongs to (or the nnU-Net network class it uses)
    architecture: str
    #: the release format, as read by the checkpoint readers
    format: str
    expected_input: ExpectedInput
    #: the recommended fine-tuning command (ID = the target dataset, FILE = the downloaded checkpoint)
    finetune: str
    description: str = ""
    size_note: str = ""
    #: architecture details verification uses (e.g. MedicalNet depth and shortcut type)
    details: Mapping[str, Any] = field(default_factory=dict)
    #: structure markers: each must occur in some tensor name of the file (``"a|b"``: either); checked by
    #: ``zoo verify`` whatever the checksum says
    markers: Tuple[str, ...] = ()

    @property
    def checksum_published(self) -> bool:
        return self.sha256 != NOT_PUBLISHED

    def as_dict(self) -> Dict[str, Any]:
        """The record as plain JSON-able data."""
        inp = self.expected_input
        return {
            "name": self.name, "family": self.family, "file_name": self.file_name, "url": self.url,
            "page": self.page, "sha256": self.sha256, "size_bytes": self.size_bytes, "size_note": self.size_note,
            "license": self.license, "citation": self.citation, "architecture": self.architecture,
            "format": self.format, "description": self.description, "finetune": self.finetune,
            "expected_input": {"modality": inp.modality, "channels": inp.channels,
                               "spacing": list(inp.spacing) if inp.spacing else None,
                               "intensity": inp.intensity.describe()},
            "details": dict(self.details), "markers": list(self.markers),
        }
