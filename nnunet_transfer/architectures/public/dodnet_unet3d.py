"""DoDNet's ``unet3D`` (jianpengz/DoDNet ``a_DynConv/unet3D_DynConv882.py``) for nnU-Net, official parameter names.

Encoder: ``conv1`` (3x3x3, 32 channels, no bias), residual stages ``layer0..layer4`` of pre-activation blocks
(GroupNorm(16) -> ReLU -> conv, twice; ``gn1/conv1/gn2/conv2`` and a ``downsample`` GN-ReLU-1x1x1 conv where the
shape changes) with 1, 2, 2, 2, 2 blocks, 32/64/128/256/256 channels, stride 2 in layer1..layer4; ``fusionConv``
(GN-ReLU-1x1x1). Decoder: trilinear upsampling by 2 plus the skip (added, not concatenated), then one block
``x8_resb``, ``x4_resb``, ``x2_resb``, ``x1_resb``; ``precls_conv`` (GN-ReLU-1x1x1 to 8 channels). Convolutions use
weight standardisation as the released MOTS model (``weight_std=True``).

DoDNet's dynamic head (``GAP``, ``controller``: per-task kernels of three 1x1x1 convolutions 8-8-2 generated from a
task code) serves its seven MOTS tasks; here it is replaced by a static head ``seg_head`` of the same shape
(8 -> 8 -> 8 -> the plans' classes, ReLU between) that nnU-Net trains, initialised fresh. Input sizes: multiples of 16.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_transfer.architectures.public.switch import (DeepSupervisionSwitch, check_fixed_strides,
                                                          refuse_deep_supervision)

__all__ = ["DoDNetUNet3D", "WeightStandardizedConv3d", "DODNET_STRIDES", "DODNET_LAYERS"]

DODNET_STRIDES: Tuple[Tuple[int, int, int], ...] = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))
#: blocks per encoder stage of the released model (``UNet3D()`` -> ``unet3D([1, 2, 2, 2, 2])``)
DODNET_LAYERS: Tuple[int, ...] = (1, 2, 2, 2, 2)


class WeightStandardizedConv3d(nn.Conv3d):
    """3D convolution whose kernel is standardised per output channel before use (DoDNet's ``Conv3d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight - self.weight.mean(dim=(1, 2, 3, 4), keepdim=True)
        std = torch.sqrt(torch.var(weight.view(weight.size(0), -1), dim=1) + 1e-12).view(-1, 1, 1, 1, 1)
        return F.conv3d(x, weight / std, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, weight_std: bool) -> nn.Conv3d:
    cls = WeightStandardizedConv3d if weight_std else nn.Conv3d
    return cls(in_channels, out_channels, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False)


class NoBottleneck(nn.Module):
    """DoDNet's residual block (pre-activation, GroupNorm(16))."""

    def __init__(self, in_channels: int, channels: int, stride: int, downsample: nn.Module | None,
                 weight_std: bool) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(16, in_channels)
        self.conv1 = _conv(in_channels, channels, 3, stride, weight_std)
        self.relu = nn.ReLU(inplace=False)
        self.gn2 = nn.GroupNorm(16, channels)
        self.conv2 = _conv(channels, channels, 3, 1, weight_std)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.gn1(x)))
        out = self.conv2(self.relu(self.gn2(out)))
        return out + (x if self.downsample is None else self.downsample(x))


def _stage(in_channels: int, channels: int, blocks: int, stride: int, weight_std: bool) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_channels != channels:
        downsample = nn.Sequential(nn.GroupNorm(16, in_channels), nn.ReLU(inplace=False),
                                   _conv(in_channels, channels, 1, stride, weight_std))
    layers = [NoBottleneck(in_channels, channels, stride, downsample, weight_std)]
    layers += [NoBottleneck(channels, channels, 1, None, weight_std) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class DoDNetUNet3D(nn.Module):
    """DoDNet's unet3D backbone with a static segmentation head (see the module docstring)."""

    supports_deep_supervision = False
    keys_to_in_proj = ("conv1",)
    head_prefixes = ("seg_head.",)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 layers: Sequence[int] = DODNET_LAYERS, weight_std: bool = True,
                 strides: Sequence[Sequence[int]] = DODNET_STRIDES) -> None:
        super().__init__()
        refuse_deep_supervision("DoDNet's unet3D", deep_supervision)
        check_fixed_strides("DoDNet's unet3D", DODNET_STRIDES, strides)
        if len(layers) != 5:
            raise ValueError(f"DoDNet's unet3D has five encoder stages; layers={list(layers)}")
        self.decoder = DeepSupervisionSwitch(False)
        self.conv1 = _conv(input_channels, 32, 3, 1, weight_std)
        self.layer0 = _stage(32, 32, layers[0], 1, weight_std)
        self.layer1 = _stage(32, 64, layers[1], 2, weight_std)
        self.layer2 = _stage(64, 128, layers[2], 2, weight_std)
        self.layer3 = _stage(128, 256, layers[3], 2, weight_std)
        self.layer4 = _stage(256, 256, layers[4], 2, weight_std)
        self.fusionConv = nn.Sequential(nn.GroupNorm(16, 256), nn.ReLU(inplace=False),
                                        _conv(256, 256, 1, 1, weight_std))
        self.x8_resb = _stage(256, 128, 1, 1, weight_std)
        self.x4_resb = _stage(128, 64, 1, 1, weight_std)
        self.x2_resb = _stage(64, 32, 1, 1, weight_std)
        self.x1_resb = _stage(32, 32, 1, 1, weight_std)
        self.precls_conv = nn.Sequential(nn.GroupNorm(16, 32), nn.ReLU(inplace=False), nn.Conv3d(32, 8, kernel_size=1))
        self.seg_head = nn.Sequential(nn.Conv3d(8, 8, kernel_size=1), nn.ReLU(inplace=False),
                                      nn.Conv3d(8, 8, kernel_size=1), nn.ReLU(inplace=False),
                                      nn.Conv3d(8, num_classes, kernel_size=1))

    @staticmethod
    def _up(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="trilinear") + skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip0 = self.layer0(self.conv1(x))
        skip1 = self.layer1(skip0)
        skip2 = self.layer2(skip1)
        skip3 = self.layer3(skip2)
        x = self.fusionConv(self.layer4(skip3))
        x = self.x8_resb(self._up(x, skip3))
        x = self.x4_resb(self._up(x, skip2))
        x = self.x2_resb(self._up(x, skip1))
        x = self.x1_resb(self._up(x, skip0))
        return self.seg_head(self.precls_conv(x))
