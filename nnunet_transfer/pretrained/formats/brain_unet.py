"""mateuszbuda/brain-segmentation-pytorch's U-Net weights (torch hub ``unet``; the release file ``unet-e012d006.pt``,
``weights/unet.pt`` of its ``train.py``).

Format: ``torch.save(unet.state_dict())`` of the repository's ``UNet`` (hub: ``torch.hub.load_state_dict_from_url``
then ``model.load_state_dict``), i.e. a flat mapping of 118 tensors, no wrapper and no prefix: blocks ``encoder1..4``,
``bottleneck``, ``decoder4..1`` with ``{prefix}conv{1,2}.weight`` (3x3, no bias) and ``{prefix}norm{1,2}.{weight,
bias,running_mean,running_var,num_batches_tracked}`` (prefixes ``enc{i}``, ``bottleneck``, ``dec{i}``),
``upconv4..1.{weight,bias}`` and the 1x1 output ``conv.{weight,bias}`` (3 input channels, 1 sigmoid output,
``init_features`` 32 in the release). Names are those of
:class:`~nnunet_transfer.architectures.brain_unet.BrainUNet`, so no renaming is needed.

The reader offers every tensor but the output convolution, which is the brain-tumour task's one-channel head
(filtered with a note: a fine-tuning network's head is new), and states the architecture it implies.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import torch

from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading

__all__ = ["FORMAT", "BRAIN_UNET_HEAD", "BRAIN_UNET_MARKERS"]

#: keys only this format has together
BRAIN_UNET_MARKERS = ("encoder1.enc1conv1.weight", "bottleneck.bottleneckconv1.weight", "decoder1.dec1conv2.weight")
#: the release's output convolution (one sigmoid channel for the brain-tumour mask)
BRAIN_UNET_HEAD = ("conv.weight", "conv.bias")


def _strip_module(state: Mapping[str, Any]) -> Dict[str, Any]:
    """Keys without a ``module.`` prefix (a copy saved from DataParallel)."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def detect(obj: Any) -> bool:
    """A flat mapping of tensors with the brain U-Net's block names."""
    if not isinstance(obj, Mapping) or not obj:
        return False
    state = _strip_module(obj)
    return all(k in state for k in BRAIN_UNET_MARKERS) and all(isinstance(v, torch.Tensor) for v in state.values())


def read(obj: Any, source: str) -> FormatReading:
    """Tensors for transfer (head filtered) and the architecture the weights imply."""
    state = _strip_module(obj)
    if not detect(state):
        raise InvalidValueError(f"{source} is not a brain-segmentation-pytorch U-Net state dict (expected keys "
                                f"{', '.join(BRAIN_UNET_MARKERS)})")
    first = state["encoder1.enc1conv1.weight"]
    metadata: Dict[str, Any] = {
        "architecture": "mateuszbuda/brain-segmentation-pytorch UNet",
        "network": "nnunet_transfer.architectures.brain_unet.BrainUNet",
        "init_features": int(first.shape[0]),
        "in_channels": int(first.shape[1]),
        "expected_input": "RGB brain MRI slices (FLAIR, pre-contrast, post-contrast), 256 x 256",
    }
    if "conv.weight" in state:
        metadata["out_channels"] = int(state["conv.weight"].shape[0])
    filtered = [k for k in BRAIN_UNET_HEAD if k in state]
    tensors = {k: v for k, v in state.items() if k not in filtered}
    notes = [f"{len(tensors)} tensors of the brain U-Net (init_features {metadata['init_features']}, "
             f"{metadata['in_channels']} input channels)"]
    if filtered:
        notes.append(f"not offered: {', '.join(filtered)} (the release's {metadata.get('out_channels', '?')}-channel "
                     "sigmoid output for brain tumours; the fine-tuning network's head starts fresh)")
    return FormatReading(tensors=tensors, filtered=filtered, notes=notes, metadata=metadata)


FORMAT = CheckpointFormat(name="brain-unet", family="mateuszbuda/brain-segmentation-pytorch", detect=detect, read=read)
