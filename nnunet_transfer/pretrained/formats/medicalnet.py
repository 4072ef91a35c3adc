"""MedicalNet's checkpoint format (Tencent's Med3D 3D ResNets), read as named tensors.

MedicalNet releases ``{'state_dict': {'module.conv1.weight': ..., 'module.layer1.0.conv1.weight': ...,
'module.conv_seg.0.weight': ...}}``: a 3D ResNet's keys behind DataParallel's ``module.`` prefix, plus a
segmentation head ``conv_seg.*`` that never belongs to an encoder. The reader strips the prefix, filters the head
out (reported) and states the block layout the keys describe. Which network the tensors fit (depth, our
``Med3DResNet``) is :mod:`nnunet_transfer.transfer.medicalnet`'s business.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Tuple

import torch

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading, state_dict_of, state_dict_or_none
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError

__all__ = ["FORMAT", "HEAD_KEY_PREFIXES", "KEY_PREFIX", "KeyLayout", "key_layout", "looks_like_medicalnet",
           "medicalnet_layout", "split_head"]

#: Checkpoint keys that belong to MedicalNet's segmentation head, never to the encoder.
HEAD_KEY_PREFIXES: Tuple[str, ...] = ("conv_seg.",)
#: DataParallel's prefix in front of every key of a released file.
KEY_PREFIX = "module."
#: (block type, blocks per layer, shortcut type, input channels) read off the keys
KeyLayout = Tuple[str, Tuple[int, int, int, int], str, int]


def looks_like_medicalnet(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the (prefix-free) keys are those of a MedicalNet ResNet: ``conv1`` and ``layer1..4``."""
    return "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in state_dict)


def split_head(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """``(encoder tensors, head keys)``: the state dict without MedicalNet's segmentation head, and the head's keys."""
    head = [k for k in state_dict if k.startswith(HEAD_KEY_PREFIXES)]
    return {k: v for k, v in state_dict.items() if k not in head}, head


def key_layout(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> KeyLayout:
    """Block type, blocks per layer, shortcut type and input channels of a MedicalNet ResNet's (prefix-free) keys.

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
    in_channels = int(state_dict["conv1.weight"].shape[1])
    return block, tuple(counts), shortcut, in_channels  # type: ignore[return-value]


def medicalnet_layout(encoder: Mapping[str, torch.Tensor],
                      source: str = "state dict") -> Dict[str, Dict[str, torch.Tensor]]:
    """``{'state_dict': {'module.<key>': tensor}}`` of a prefix-free Med3D ResNet encoder state dict."""
    if not looks_like_medicalnet(encoder):
        raise CheckpointFormatError(
            f"{source}: the encoder is not a Med3D ResNet (no conv1/layer1 keys; first keys: {list(encoder)[:4]}), "
            "so it cannot be written in MedicalNet's layout; write the plain layout instead")
    return {"state_dict": {KEY_PREFIX + k: v for k, v in encoder.items()}}


def detect(obj: Any) -> bool:
    state = state_dict_or_none(obj)
    return state is not None and looks_like_medicalnet(state)


def read(obj: Any, source: str) -> FormatReading:
    encoder, head = split_head(state_dict_of(obj, source))
    notes = [f"MedicalNet segmentation head filtered out ({len(head)} tensors)"] if head else []
    metadata: Dict[str, Any] = {}
    try:
        block, layers, shortcut, in_channels = key_layout(encoder, source)
        metadata = {"block": block, "layers": list(layers), "shortcut_type": shortcut, "in_channels": in_channels}
    except CheckpointFormatError as exc:  # a partial ResNet still offers its tensors; the note says why no layout
        notes.append(str(exc))
    return FormatReading(encoder, filtered=head, notes=notes, metadata=metadata)


FORMAT = CheckpointFormat(name="medicalnet", family="MedicalNet", detect=detect, read=read)
