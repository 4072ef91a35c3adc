"""MedicalNet weights in our networks: which Med3D ResNet a MedicalNet file fits, how its keys map onto a network
whose encoder is a Med3D ResNet, and the one load path into a bare encoder.

The file format itself (prefix, segmentation head, block layout of the keys) is read by
:mod:`nnunet_transfer.pretrained.formats.medicalnet`; this module adds what needs a network:

- :func:`infer_medicalnet_architecture`: depth, block type, shortcut type and input channels of a file, and
  :class:`ArchitectureMismatchError` (via :func:`check_architecture`) when it was made for another depth or shortcut;
- :func:`medicalnet_prefix_map` and :data:`MEDICALNET_EXCLUDE`: how a MedicalNet file maps onto a network whose
  encoder is a Med3D ResNet (the plans' pretrained-weights record stores both);
- :func:`load_medicalnet`: MedicalNet weights into a bare :class:`~nnunet_transfer.architectures.med3d.Med3DResNet`,
  through :func:`~nnunet_transfer.transfer.weights.transfer_weights`, whose input-channel rule adapts ``conv1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

import torch
from torch import nn

from nnunet_transfer.architectures.med3d import RESNET_LAYOUTS, Med3DResNet
from nnunet_transfer.errors import NnUNetTransferError, WrongKindError
from nnunet_transfer.pretrained.formats.base import SourceWeights
from nnunet_transfer.pretrained.formats.medicalnet import HEAD_KEY_PREFIXES, key_layout, split_head
from nnunet_transfer.transfer.adapt import AdaptOptions
from nnunet_transfer.transfer.weights import DEFAULT_EXCLUDE, TransferReport, read_source, transfer_weights

__all__ = ["MEDICALNET_EXCLUDE", "MedicalNetArchitecture", "ArchitectureMismatchError",
           "infer_medicalnet_architecture", "check_architecture", "medicalnet_prefix_map", "load_medicalnet"]

#: Checkpoint keys never transferred from a MedicalNet file into a network: the task heads every transfer drops,
#: and MedicalNet's segmentation head.
MEDICALNET_EXCLUDE: Tuple[str, ...] = tuple(DEFAULT_EXCLUDE) + HEAD_KEY_PREFIXES

MedicalNetSource = Union[str, Path, Mapping[str, torch.Tensor], SourceWeights]


@dataclass(frozen=True)
class MedicalNetArchitecture:
    """Architecture read off a state dict: depth (None if the block counts match no known depth)."""

    depth: int | None
    block: str
    layers: Tuple[int, int, int, int]
    shortcut_type: str
    in_channels: int

    def __str__(self) -> str:
        name = f"ResNet-{self.depth}" if self.depth is not None else "an unknown ResNet"
        return f"{name} ({self.block} blocks {list(self.layers)}, shortcut {self.shortcut_type})"


class ArchitectureMismatchError(NnUNetTransferError, ValueError):
    """A checkpoint was made for another MedicalNet depth or shortcut type than the network."""


def infer_medicalnet_architecture(state_dict: Mapping[str, torch.Tensor],
                                  source: str = "checkpoint") -> MedicalNetArchitecture:
    """Depth, block type and shortcut type of a MedicalNet ResNet from its (prefix-free) keys (see
    :func:`~nnunet_transfer.pretrained.formats.medicalnet.key_layout`); the depth is the Med3D ResNet's with that
    block layout."""
    block, layers, shortcut, in_channels = key_layout(state_dict, source)
    depth = next((d for d, (b, counts) in RESNET_LAYOUTS.items() if b == block and counts == layers), None)
    return MedicalNetArchitecture(depth, block, layers, shortcut, in_channels)


def check_architecture(encoder: Med3DResNet, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`ArchitectureMismatchError` (naming the fix) when the keys describe another depth or shortcut."""
    found = infer_medicalnet_architecture(state_dict, source=source)
    if (found.depth, found.shortcut_type) != (encoder.depth, encoder.shortcut_type):
        fix = (f"Med3DResNet(depth={found.depth}, shortcut_type={found.shortcut_type!r})"
               if found.depth is not None else "a Med3DResNet whose depth matches the file")
        raise ArchitectureMismatchError(
            f"{source} holds weights of {found}, but this encoder is {encoder.architecture}. "
            f"Build {fix} to use this file, or pick the file made for ResNet-{encoder.depth} "
            f"(shortcut {encoder.shortcut_type}), e.g. resnet_{encoder.depth}.pth."
        )


def medicalnet_prefix_map(network: nn.Module) -> Dict[str, str]:
    """How MedicalNet's keys map onto ``network``: every key goes under the network's ``key_to_encoder``."""
    encoder_key = getattr(network, "key_to_encoder", None)
    if encoder_key is None or not isinstance(network.get_submodule(encoder_key), Med3DResNet):
        raise WrongKindError(f"{type(network).__name__} has no Med3D ResNet encoder at its key_to_encoder "
                             f"({encoder_key!r}), so MedicalNet weights have no place in it; build the network with a "
                             "med3d-resnet encoder (see nnunet_transfer.architectures.encoders)")
    return {"": f"{encoder_key}." if encoder_key else ""}


def load_medicalnet(encoder: Med3DResNet, source: MedicalNetSource, strict_shapes: bool = True) -> TransferReport:
    """Load MedicalNet weights into a bare :class:`Med3DResNet` safely and report what was loaded.

    Accepts a released file (``{'state_dict': {'module.conv1.weight': ...}}``), a bare state dict file, a
    ``.safetensors`` file, an in-memory (possibly wrapped) state dict, or source weights already read. Files are read
    once with ``torch.load(weights_only=True, map_location="cpu")`` (or safetensors); ``module.`` prefixes are
    stripped and the segmentation head (``conv_seg.*``) is filtered out (reported as skipped). A checkpoint of another
    depth or shortcut type raises :class:`ArchitectureMismatchError`. ``conv1`` (the encoder's ``keys_to_in_proj``)
    is adapted to the encoder's input channels by the transfer's input-channel rule; with ``strict_shapes`` any other
    shape mismatch raises, otherwise it is skipped and reported.
    """
    weights = read_source(source)
    name = weights.source if not isinstance(source, Mapping) else "in-memory state dict"
    check_architecture(encoder, split_head(weights.tensors)[0], name)
    return transfer_weights(encoder, weights, exclude=HEAD_KEY_PREFIXES, head_patterns=(),
                            adapt=AdaptOptions(input_channels_only=True), strict_shapes=strict_shapes,
                            source_name=name)
