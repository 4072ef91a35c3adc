"""The public brain-MRI U-Net that the attention fine-tuning paper starts from, optionally with attention gates.

Khadka ("Transfer of Knowledge: Fine-tuning for Polyp Segmentation with Attention") fine-tunes the U-Net of
mateuszbuda/brain-segmentation-pytorch (torch hub ``unet``, weights ``unet.pt``), adding additive attention gates. The
architecture here is that network, module for module, so its state dict has the same keys and shapes and a
``unet.pt`` loads by name:

* five levels of two ``3x3 conv (no bias) -> BatchNorm -> ReLU`` blocks, ``init_features`` 32 doubling to 512 at the
  bottleneck, 2x2 max-pooling down, 2x2 transposed convolutions up, skips concatenated;
* module names ``encoder{1..4}`` / ``bottleneck`` / ``decoder{4..1}`` holding ``{prefix}conv1``, ``{prefix}norm1``,
  ``{prefix}relu1``, ``{prefix}conv2``, ``{prefix}norm2``, ``{prefix}relu2`` with prefixes ``enc{i}``,
  ``bottleneck``, ``dec{i}`` (e.g. ``encoder1.enc1conv1.weight``), ``pool{1..4}``, ``upconv{4..1}``, and the 1x1
  output convolution ``conv``;
* in 3 channels, out 1 in the release. Here the output has nnU-Net's number of segmentation heads and returns logits
  (the release applies a sigmoid; nnU-Net's losses and predictor apply softmax/sigmoid themselves), so ``conv.*`` is
  the new head of a transfer.

``attention_gates=True`` adds an :class:`~nnunet_transfer.architectures.attention_unet.AttentionGate` (batch norm in
its output transform, the transfer start of that module) on each of the four skips, under ``attention_gates.*``:
every other key stays the release's. ``input_from_unit_range=True`` maps inputs from [0, 1] (nnU-Net's
``rgb_to_0_1`` normalisation) to the paper's [-1, 1] as the first operation of ``forward``, so nnU-Net's training and
prediction both feed the network the paper's range.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List

import torch
from torch import nn

from nnunet_transfer.architectures.attention_unet import AttentionGate

__all__ = ["BrainUNet", "BRAIN_UNET_LEVELS", "brain_unet_block"]

#: encoder levels above the bottleneck
BRAIN_UNET_LEVELS = 4


def brain_unet_block(in_channels: int, features: int, prefix: str) -> nn.Sequential:
    """Two ``3x3 conv (no bias) -> BatchNorm2d -> ReLU``, named ``{prefix}conv1`` ... ``{prefix}relu2``."""
    layers = OrderedDict()
    for i, cin in ((1, in_channels), (2, features)):
        layers[f"{prefix}conv{i}"] = nn.Conv2d(cin, features, kernel_size=3, padding=1, bias=False)
        layers[f"{prefix}norm{i}"] = nn.BatchNorm2d(features)
        layers[f"{prefix}relu{i}"] = nn.ReLU(inplace=True)
    return nn.Sequential(layers)


class BrainUNet(nn.Module):
    """mateuszbuda's brain-MRI U-Net (2D), logits out; optional attention gates and [0, 1] -> [-1, 1] input mapping."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, init_features: int = 32,
                 attention_gates: bool = False, input_from_unit_range: bool = False):
        super().__init__()
        self.input_from_unit_range = input_from_unit_range
        widths = [init_features * 2 ** i for i in range(BRAIN_UNET_LEVELS + 1)]
        cin = in_channels
        for level in range(1, BRAIN_UNET_LEVELS + 1):
            setattr(self, f"encoder{level}", brain_unet_block(cin, widths[level - 1], f"enc{level}"))
            setattr(self, f"pool{level}", nn.MaxPool2d(kernel_size=2, stride=2))
            cin = widths[level - 1]
        self.bottleneck = brain_unet_block(widths[-2], widths[-1], "bottleneck")
        for level in range(BRAIN_UNET_LEVELS, 0, -1):
            setattr(self, f"upconv{level}", nn.ConvTranspose2d(widths[level], widths[level - 1], kernel_size=2,
                                                               stride=2))
            setattr(self, f"decoder{level}", brain_unet_block(2 * widths[level - 1], widths[level - 1],
                                                              f"dec{level}"))
        self.conv = nn.Conv2d(init_features, out_channels, kernel_size=1)
        # gate i filters the skip of level i with the features coming up from level i + 1
        self.attention_gates = nn.ModuleList(
            AttentionGate(widths[level - 1], widths[level], conv_op=nn.Conv2d, norm_op=nn.BatchNorm2d)
            for level in range(1, BRAIN_UNET_LEVELS + 1)) if attention_gates else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_from_unit_range:
            x = x * 2 - 1
        skips: List[torch.Tensor] = []
        for level in range(1, BRAIN_UNET_LEVELS + 1):
            x = getattr(self, f"encoder{level}")(x)
            skips.append(x)
            x = getattr(self, f"pool{level}")(x)
        x = self.bottleneck(x)
        for level in range(BRAIN_UNET_LEVELS, 0, -1):
            skip = skips[level - 1]
            if self.attention_gates is not None:
                skip = self.attention_gates[level - 1](skip, x)
            x = getattr(self, f"upconv{level}")(x)
            x = getattr(self, f"decoder{level}")(torch.cat((x, skip), dim=1))
        return self.conv(x)
