"""Checkpoint formats: one reader module per released format, each exposing ``FORMAT`` (a
:class:`~nnunet_transfer.pretrained.formats.base.CheckpointFormat`). :data:`FORMAT_MODULES` lists them in the order
they are tried; adding a format is one module here and one name in that tuple."""

from __future__ import annotations

import importlib
from typing import List

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading, SourceWeights

#: reader modules of this package, tried in this order (the most specific formats first; STU-Net before nnU-Net v1's
#: Generic_UNet, whose keys also start with conv_blocks_context; the Universal Model before SuPreM; the plain state
#: dict last, as the catch-all)
FORMAT_MODULES: tuple = ("nnssl", "stunet", "nnunet_v1", "nnunet_v2", "models_genesis", "universal_model", "suprem",
                         "voco", "dodnet", "brain_unet", "medicalnet", "state_dict")


def registered_formats() -> List[CheckpointFormat]:
    """Every registered checkpoint format, in detection order."""
    return [importlib.import_module(f"{__name__}.{name}").FORMAT for name in FORMAT_MODULES]


__all__ = ["CheckpointFormat", "FormatReading", "SourceWeights", "FORMAT_MODULES", "registered_formats"]
