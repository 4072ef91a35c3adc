"""What a checkpoint format reader is and what it produces.

A reader turns the top-level object of a checkpoint, already deserialised without running code (``weights_only``
torch loading, data-only pickles, safetensors, JSON), into named tensors plus what the format says about them. It
knows nothing about the network the tensors will go into: mapping, adaptation and loading are
:mod:`nnunet_transfer.transfer`'s work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from nnunet_transfer.pretrained.safe_load import CheckpointFormatError, find_state_dict, strip_key_prefixes


def state_dict_of(obj: Any, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The prefix-free ``{name: tensor}`` of a checkpoint object (bare or under a usual wrapper key); raises
    :class:`~nnunet_transfer.pretrained.safe_load.CheckpointFormatError` naming ``source`` when there is none."""
    return strip_key_prefixes(find_state_dict(obj, source=source))


def state_dict_or_none(obj: Any) -> Optional[Dict[str, torch.Tensor]]:
    """:func:`state_dict_of`, or None when ``obj`` holds no state dict (for ``detect`` functions, which never raise)."""
    try:
        return state_dict_of(obj)
    except CheckpointFormatError:
        return None


@dataclass
class FormatReading:
    """What one reader makes of a checkpoint object."""

    #: tensors with the format's wrappers and prefixes removed, named as the family's own network names them
    tensors: Dict[str, torch.Tensor]
    #: checkpoint keys deliberately not offered for transfer (a pretext decoder, a projection head), with the reason
    #: in :attr:`notes`
    filtered: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: the source plans when the format carries them (results folder plans.json, v1 .pkl, nnssl adaptation plan)
    plans: Optional[Mapping[str, Any]] = None
    #: what else the format states: architecture name, expected input (modality, spacing, normalisation), ...
    metadata: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointFormat:
    """One released checkpoint format: how to recognise its top-level object and how to read it."""

    name: str
    #: the family of models that ships this format (shown in reports)
    family: str
    detect: Callable[[Any], bool]
    read: Callable[[Any, str], FormatReading]
    #: files the format keeps next to a checkpoint file (nnU-Net v1's ``<file>.pkl``): ``fn(checkpoint path) ->
    #: (plans or None, notes)``, read as data only; None when the format has none
    companion: Optional[Callable[[Path], Tuple[Optional[Mapping[str, Any]], List[str]]]] = None


@dataclass
class SourceWeights:
    """A source checkpoint read once: the sha256 of the bytes read, the format recognised and its reading.

    Everything downstream of the read works from this object; nothing re-opens the user's path.
    """

    source: str
    sha256: str
    format: str
    family: str
    reading: FormatReading

    #: the file whose bytes were read (a results folder's checkpoint, the file itself), None for a zip member or
    #: an in-memory state dict
    file: Optional[str] = None
    #: where the checkpoint sat: "file" (given itself), "results folder", "zip" or "memory"
    container: str = "file"

    @property
    def tensors(self) -> Dict[str, torch.Tensor]:
        return self.reading.tensors

    @property
    def filtered(self) -> List[str]:
        return self.reading.filtered

    @property
    def notes(self) -> List[str]:
        return self.reading.notes

    @property
    def plans(self) -> Optional[Mapping[str, Any]]:
        return self.reading.plans
