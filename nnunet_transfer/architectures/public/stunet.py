"""STU-Net (uni-medical/STU-Net, ``STUNet``) for nnU-Net v2, with the official parameter names.

Six resolution stages of residual blocks (``BasicResBlock``: ``conv1``-``norm1``-LeakyReLU-``conv2``-``norm2`` plus
the input, through a 1x1x1 ``conv3`` where the shape changes; instance norm), the first block of stages 1-5 strided;
the decoder upsamples by nearest-neighbour interpolation followed by a 1x1x1 convolution (``upsample_layers``),
concatenates the skip and applies one stage of blocks (``conv_blocks_localization``); one 1x1x1 output per decoder
stage (``seg_outputs``) gives nnU-Net's deep supervision, highest resolution first. Kernels are 3x3x3 everywhere and
there are always five downsamplings: STU-Net's trainers take the plans' pool kernels, cut to five or padded with
``[1, 1, 1]``, which :func:`stunet_strides` does as well.

Sizes (STU-Net's trainers): S ``dims`` 16..256, B 32..512, L 64..1024 with two blocks per stage, H 96..1536 with
three (:data:`STUNET_SIZES`).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_transfer.architectures.public.switch import DeepSupervisionSwitch

__all__ = ["STUNet", "STUNET_SIZES", "stunet_strides"]

#: ``{size: (depth per stage, channels per stage)}`` of STU-Net's S/B/L/H trainers
STUNET_SIZES: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    "s": ((1,) * 6, tuple(16 * m for m in (1, 2, 4, 8, 16, 16))),
    "b": ((1,) * 6, tuple(32 * m for m in (1, 2, 4, 8, 16, 16))),
    "l": ((2,) * 6, tuple(64 * m for m in (1, 2, 4, 8, 16, 16))),
    "h": ((3,) * 6, tuple(96 * m for m in (1, 2, 4, 8, 16, 16))),
}


def stunet_strides(plans_strides: Sequence[Sequence[int]]) -> List[List[int]]:
    """nnU-Net ``strides`` (input stage first) for STU-Net: the plans' downsamplings cut to five or padded with 1s."""
    pools = [[int(v) for v in s] for s in plans_strides[1:]][:5]
    pools += [[1, 1, 1]] * (5 - len(pools))
    return [[1, 1, 1]] + pools


class BasicResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int] | int = 1,
                 use_1x1conv: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.norm1 = nn.InstanceNorm3d(out_channels, affine=True)
        self.act1 = nn.LeakyReLU(inplace=True)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.norm2 = nn.InstanceNorm3d(out_channels, affine=True)
        self.act2 = nn.LeakyReLU(inplace=True)
        self.conv3 = nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=stride) if use_1x1conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act2(y + (self.conv3(x) if self.conv3 is not None else x))


class UpsampleLayerNearest(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, scale: Sequence[int]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        self.scale = tuple(float(s) for s in scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


def _stage(in_channels: int, channels: int, depth: int, stride: Sequence[int] | int = 1) -> nn.Sequential:
    return nn.Sequential(BasicResBlock(in_channels, channels, stride, use_1x1conv=True),
                         *[BasicResBlock(channels, channels) for _ in range(depth - 1)])


class STUNet(nn.Module):
    """STU-Net built from nnU-Net's plans (see the module docstring); ``strides`` has six entries, input first."""

    keys_to_in_proj = ("conv_blocks_context.0.0.conv1", "conv_blocks_context.0.0.conv3")
    head_prefixes = ("seg_outputs.",)

    def __init__(self, input_channels: int, num_classes: int, depth: Sequence[int], dims: Sequence[int],
                 strides: Sequence[Sequence[int]], deep_supervision: bool = True) -> None:
        super().__init__()
        if len(depth) != 6 or len(dims) != 6 or len(strides) != 6:
            raise ValueError(f"STU-Net has six stages; got depth {list(depth)}, dims {list(dims)}, "
                             f"strides {[list(s) for s in strides]}")
        pools = [tuple(int(v) for v in s) for s in strides[1:]]
        self.decoder = DeepSupervisionSwitch(deep_supervision)
        self.conv_blocks_context = nn.ModuleList([_stage(input_channels, dims[0], depth[0])])
        for d in range(1, 6):
            self.conv_blocks_context.append(_stage(dims[d - 1], dims[d], depth[d], pools[d - 1]))
        self.upsample_layers = nn.ModuleList(
            UpsampleLayerNearest(dims[-1 - u], dims[-2 - u], pools[-1 - u]) for u in range(5))
        self.conv_blocks_localization = nn.ModuleList(
            _stage(dims[-2 - u] * 2, dims[-2 - u], depth[-2 - u]) for u in range(5))
        self.seg_outputs = nn.ModuleList(nn.Conv3d(dims[-2 - u], num_classes, kernel_size=1) for u in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor | List[torch.Tensor]:
        skips = []
        for stage in self.conv_blocks_context[:-1]:
            x = stage(x)
            skips.append(x)
        x = self.conv_blocks_context[-1](x)
        outputs = []
        for u, (up, stage, head) in enumerate(zip(self.upsample_layers, self.conv_blocks_localization,
                                                  self.seg_outputs)):
            x = stage(torch.cat((up(x), skips[-(u + 1)]), dim=1))
            if self.decoder.deep_supervision or u == 4:
                outputs.append(head(x))
        return outputs[::-1] if self.decoder.deep_supervision else outputs[-1]
