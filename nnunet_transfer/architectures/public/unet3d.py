"""Models Genesis' 3D U-Net (``UNet3D``), also the U-Net backbone of SuPreM and the CLIP-Driven Universal Model.

Layout as in MrGiovanni/ModelsGenesis ``pytorch/unet3d.py`` (and SuPreM's ``backbone/unet.py``, identical but for
the output layer): four down transitions ``down_tr64/128/256/512`` of two 3x3x3 convolutions each
(``ops.{0,1}.conv1`` + ``ops.{0,1}.bn1``; 32/64, 64/128, 128/256, 256/512 channels), max pooling by 2 after the
first three, three up transitions ``up_tr256/128/64`` (``up_conv``: 2x2x2 transposed convolution, then two
convolutions on the concatenation with the skip) and ``out_tr.final_conv`` (1x1x1). Parameter names are the
official ones, so released weights load as they are. Differences, all for nnU-Net: the input has the plans'
channels, ``out_tr.final_conv`` has the plans' classes and returns logits (no sigmoid), and the network carries
nnU-Net's deep-supervision switch (it has one output, so deep supervision stays off).

Batch norm: the official ``ContBatchNorm3d`` always normalises with the statistics of the current batch, in training
and at inference; :class:`ContBatchNorm3d` does the same (``batch_statistics=False`` gives ordinary batch norm that
uses the running statistics at inference).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_transfer.architectures.public.switch import (DeepSupervisionSwitch, check_fixed_strides,
                                                          refuse_deep_supervision)

__all__ = ["UNet3D", "ContBatchNorm3d", "UNET3D_STRIDES"]

#: the fixed downsampling of UNet3D: three max poolings by 2 (nnU-Net's plans ``strides``, input stage first)
UNET3D_STRIDES: Tuple[Tuple[int, int, int], ...] = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))


class ContBatchNorm3d(nn.BatchNorm3d):
    """Batch norm that uses the batch statistics also in eval mode (Models Genesis' ``ContBatchNorm3d``)."""

    def __init__(self, num_features: int, batch_statistics: bool = True) -> None:
        super().__init__(num_features)
        self.batch_statistics = batch_statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.batch_statistics:
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, self.momentum,
                            self.eps)


class LUConv(nn.Module):
    """3x3x3 convolution, batch norm, activation (official names ``conv1``, ``bn1``, ``activation``)."""

    def __init__(self, in_channels: int, out_channels: int, act: str, batch_statistics: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = ContBatchNorm3d(out_channels, batch_statistics)
        if act == "relu":
            self.activation = nn.ReLU(inplace=True)
        elif act == "prelu":
            self.activation = nn.PReLU(out_channels)
        elif act == "elu":
            self.activation = nn.ELU(inplace=True)
        else:
            raise ValueError(f"UNet3D: unknown activation {act!r}; use relu (the released models), prelu or elu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.bn1(self.conv1(x)))


def _two_convs(in_channels: int, depth: int, act: str, batch_statistics: bool, double: bool) -> nn.Sequential:
    """Official ``_make_nConv``: 32*2^d then 64*2^d channels (down), or twice 64*2^d (up, ``double``)."""
    first = 32 * 2 ** (depth + 1) if double else 32 * 2 ** depth
    second = 32 * 2 ** (depth + 1)
    return nn.Sequential(LUConv(in_channels, first, act, batch_statistics),
                         LUConv(first, second, act, batch_statistics))


class DownTransition(nn.Module):
    def __init__(self, in_channels: int, depth: int, act: str, batch_statistics: bool) -> None:
        super().__init__()
        self.ops = _two_convs(in_channels, depth, act, batch_statistics, double=False)
        self.maxpool = nn.MaxPool3d(2)
        self.current_depth = depth

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        before_pool = self.ops(x)
        return (before_pool if self.current_depth == 3 else self.maxpool(before_pool)), before_pool


class UpTransition(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, depth: int, act: str, batch_statistics: bool) -> None:
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2)
        self.ops = _two_convs(in_channels + out_channels // 2, depth, act, batch_statistics, double=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.ops(torch.cat((self.up_conv(x), skip), 1))


class OutputTransition(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.final_conv = nn.Conv3d(in_channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(x)


class UNet3D(nn.Module):
    """Models Genesis / SuPreM UNet3D for nnU-Net (see the module docstring). Input sizes: multiples of 8."""

    supports_deep_supervision = False
    #: the released checkpoints' names of the layers that depend on the input channels and of the output layer
    keys_to_in_proj = ("down_tr64.ops.0.conv1",)
    head_prefixes = ("out_tr.",)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, act: str = "relu",
                 batch_statistics: bool = True, strides: Sequence[Sequence[int]] = UNET3D_STRIDES) -> None:
        super().__init__()
        refuse_deep_supervision("UNet3D", deep_supervision)
        check_fixed_strides("UNet3D", UNET3D_STRIDES, strides)
        self.decoder = DeepSupervisionSwitch(False)
        self.down_tr64 = DownTransition(input_channels, 0, act, batch_statistics)
        self.down_tr128 = DownTransition(64, 1, act, batch_statistics)
        self.down_tr256 = DownTransition(128, 2, act, batch_statistics)
        self.down_tr512 = DownTransition(256, 3, act, batch_statistics)
        self.up_tr256 = UpTransition(512, 512, 2, act, batch_statistics)
        self.up_tr128 = UpTransition(256, 256, 1, act, batch_statistics)
        self.up_tr64 = UpTransition(128, 128, 0, act, batch_statistics)
        self.out_tr = OutputTransition(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out64, skip64 = self.down_tr64(x)
        out128, skip128 = self.down_tr128(out64)
        out256, skip256 = self.down_tr256(out128)
        out512, _ = self.down_tr512(out256)
        x = self.up_tr256(out512, skip256)
        x = self.up_tr128(x, skip128)
        x = self.up_tr64(x, skip64)
        return self.out_tr(x)
