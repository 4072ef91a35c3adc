"""MedicalNet's checkpoint format (Tencent's Med3D 3D ResNets): everything nnunet-transfer knows about those files.

MedicalNet releases ``{'state_dict': {'module.conv1.weight': ..., 'module.layer1.0.conv1.weight': ...,
'module.conv_seg.0.weight': ...}}``: the keys of :class:`~nnunet_transfer.architectures.med3d.Med3DResNet` behind
DataParallel's ``module.`` prefix, plus a segmentation head ``conv_seg.*`` that never belongs to an encoder. This
module holds that knowledge and nothing else holds it:

- :data:`HEAD_KEY_PREFIXES`, :data:`KEY_PREFIX`: the head and the wrapper prefix;
- :func:`infer_medicalnet_architecture`: depth, block type, shortcut type and input channels read off the keys, and
  :class:`ArchitectureMismatchError` when a file was made for another depth or shortcut type;
- :func:`medicalnet_layout`: an encoder state dict written the way MedicalNet releases its files;
- :func:`medicalnet_prefix_map` and :data:`MEDICALNET_EXCLUDE`: how a MedicalNet file maps onto a network whose
  encoder is a Med3D ResNet (the plans' pretrained-weights record stores both);
- :func:`load_medicalnet`: the one load path of a MedicalNet file into a bare encoder (what
  ``Med3DResNet.load_medicalnet`` calls), through :func:`~nnunet_transfer.transfer.weights.transfer_weights`, whose
  input-channel rule adapts ``conv1`` to another number of input channels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Tuple, Union

import torch
from torch import nn

from nnunet_transfer.architectures.med3d import RESNET_LAYOUTS, Med3DResNet
from nnunet_transfer.pretrained.safe_load import (
    CheckpointFormatError,
    find_state_dict,
    read_checkpoint_file,
    strip_key_prefixes,
)
from nnunet_transfer.transfer.adapt import AdaptOptions
from nnunet_transfer.transfer.weights import DEFAULT_EXCLUDE, TransferReport, transfer_weights
from nnunet_transfer.errors import NnUNetTransferError, WrongKindError

__all__ = [
    "HEAD_KEY_PREFIXES",
    "KEY_PREFIX",
    "MEDICALNET_EXCLUDE",
    "MedicalNetArchitecture",
    "ArchitectureMismatchError",
    "infer_medicalnet_architecture",
    "check_architecture",
    "looks_like_medicalnet",
    "split_head",
    "medicalnet_layout",
    "medicalnet_prefix_map",
    "load_medicalnet",
]

#: Checkpoint keys that belong to MedicalNet's segmentation head, never to the encoder.
HEAD_KEY_PREFIXES: Tuple[str, ...] = ("conv_seg.",)
#: DataParallel's prefix in front of every key of a released file.
KEY_PREFIX = "module."
#: Checkpoint keys never transferred from a MedicalNet file into a network: the task heads every transfer drops,
#: and MedicalNet's segmentation head.
MEDICALNET_EXCLUDE: Tuple[str, ...] = tuple(DEFAULT_EXCLUDE) + HEAD_KEY_PREFIXES

MedicalNetSource = Union[str, Path, Mapping[str, torch.Tensor]]


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


def looks_like_medicalnet(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the (prefix-free) keys are those of a MedicalNet ResNet: ``conv1`` and ``layer1..4``."""
    return "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in state_dict)


def split_head(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """``(encoder tensors, head keys)``: the state dict without MedicalNet's segmentation head, and the head's keys."""
    head = [k for k in state_dict if k.startswith(HEAD_KEY_PREFIXES)]
    return {k: v for k, v in state_dict.items() if k not in head}, head


def infer_medicalnet_architecture(state_dict: Mapping[str, torch.Tensor],
                                  source: str = "checkpoint") -> MedicalNetArchitecture:
    """Infer depth, block type and shortcut type of a MedicalNet ResNet from its (prefix-free) keys.

    Blocks per layer come from the ``layerN.I.`` indices, Bottleneck vs BasicBlock from the presence of
    ``conv3`` in blocks, shortcut B from ``downsample.0`` convs (shortcut A has no parameters).
    """
    if "conv1.weight" not in state_dict:
        raise CheckpointFormatError(
            f"{source} is not a MedicalNet 3D ResNet: it has no 'conv1.weight' (first keys: "
            f"{list(state_dict)[:5]}). Expected keys like 'module.conv1.weight', 'module.layer1.0.conv1.weight'."
        )
    counts = [0, 0, 0, 0]
    pattern = re.compile(r"^layer([1-4])\.(\d+)\.")
    for key in state_dict:
        m = pattern.match(key)
        if m:
            layer, idx = int(m.group(1)) - 1, int(m.group(2))
            counts[layer] = max(counts[layer], idx + 1)
    if min(counts) == 0:
        raise CheckpointFormatError(
            f"{source} is not a MedicalNet 3D ResNet: blocks per layer read from its keys are {counts}, "
            f"but every one of layer1..layer4 must have at least one block."
        )
    block = "bottleneck" if any(re.match(r"^layer\d\.\d+\.conv3\.weight$", k) for k in state_dict) else "basic"
    shortcut = "B" if any(".downsample.0.weight" in k for k in state_dict) else "A"
    depth = next((d for d, (b, layers) in RESNET_LAYOUTS.items() if b == block and layers == tuple(counts)), None)
    in_channels = int(state_dict["conv1.weight"].shape[1])
    return MedicalNetArchitecture(depth, block, tuple(counts), shortcut, in_channels)  # type: ignore[arg-type]


def medicalnet_layout(encoder: Mapping[str, torch.Tensor],
                      source: str = "state dict") -> Dict[str, Dict[str, torch.Tensor]]:
    """``{'state_dict': {'module.<key>': tensor}}`` of a prefix-free Med3D ResNet encoder state dict."""
    if not looks_like_medicalnet(encoder):
        raise CheckpointFormatError(
            f"{source}: the encoder is not a Med3D ResNet (no conv1/layer1 keys; first keys: {list(encoder)[:4]}), "
            "so it cannot be written in MedicalNet's layout; write the plain layout instead")
    return {"state_dict": {KEY_PREFIX + k: v for k, v in encoder.items()}}


def medicalnet_prefix_map(network: nn.Module) -> Dict[str, str]:
    """How MedicalNet's keys map onto ``network``: every key goes under the network's ``key_to_encoder``."""
    encoder_key = getattr(network, "key_to_encoder", None)
    if encoder_key is None or not isinstance(network.get_submodule(encoder_key), Med3DResNet):
        raise WrongKindError(f"{type(network).__name__} has no Med3D ResNet encoder at its key_to_encoder "
                             f"({encoder_key!r}), so MedicalNet weights have no place in it; build the network with a "
                             "med3d-resnet encoder (see nnunet_transfer.architectures.encoders)")
    return {"": f"{encoder_key}." if encoder_key else ""}


def _read(source: MedicalNetSource) -> Tuple[Dict[str, torch.Tensor], str]:
    """The prefix-free state dict of a released file, a bare state-dict file, a ``.safetensors`` file or an in-memory
    (possibly wrapped) state dict, and the name to use in messages."""
    if isinstance(source, (str, Path)):
        name, raw = str(source), read_checkpoint_file(source)
    elif isinstance(source, Mapping):
        name, raw = "in-memory state dict", source
    else:
        raise TypeError(f"load_medicalnet takes a path or a state dict, got {type(source).__name__}")
    return strip_key_prefixes(find_state_dict(raw, source=name)), name


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


def load_medicalnet(encoder: Med3DResNet, source: MedicalNetSource, strict_shapes: bool = True) -> TransferReport:
    """Load MedicalNet weights into a bare :class:`Med3DResNet` safely and report what was loaded.

    Files are read with ``torch.load(weights_only=True, map_location="cpu")`` (or safetensors); ``module.``
    prefixes are stripped and the segmentation head (``conv_seg.*``) is filtered out (reported as skipped). A
    checkpoint of another depth or shortcut type raises :class:`ArchitectureMismatchError`. ``conv1`` (the encoder's
    ``keys_to_in_proj``) is adapted to the encoder's input channels by the transfer's input-channel rule; with
    ``strict_shapes`` any other shape mismatch raises, otherwise it is skipped and reported.
    """
    state, name = _read(source)
    check_architecture(encoder, split_head(state)[0], name)
    return transfer_weights(encoder, state, exclude=HEAD_KEY_PREFIXES, head_patterns=(),
                            adapt=AdaptOptions(input_channels_only=True), strict_shapes=strict_shapes,
                            source_name=name)
