"""Med3D (MedicalNet) 3D ResNet encoders that load Tencent's released MedicalNet weights.

The layout follows MedicalNet's ``models/resnet.py`` exactly, so that ``state_dict()`` keys and shapes equal
those of the released checkpoints minus the ``module.`` prefix (and without the ``conv_seg`` head):

- stem: ``conv1`` (kernel 7, stride 2, padding 3, no bias) - ``bn1`` - ReLU, then ``maxpool`` (kernel 3,
  stride 2, padding 1);
- ``layer1`` 64 planes stride 1; ``layer2`` 128 planes stride 2; ``layer3`` 256 planes stride 1 dilation 2;
  ``layer4`` 512 planes stride 1 dilation 4. Every block of a layer uses the layer's dilation; the stride
  sits on the first block (in a Bottleneck on its 3x3x3 conv, the 1x1x1 convs are never strided);
- every conv is bias-free and followed by BatchNorm3d;
- shortcut "A" (ResNet-18/34): parameter-free, a stride-``s`` subsampling (MedicalNet's
  ``avg_pool3d(kernel_size=1, stride=s)``) followed by zero channels appended; shortcut "B" (10, 50, 101, 152,
  200): 1x1x1 strided conv without bias + BatchNorm (``downsample.0`` / ``downsample.1``). A block gets a
  shortcut projection when its stride is not 1 or its channel count changes.

One deliberate difference: MedicalNet's shortcut A rebuilds its output from ``out.data``, which silently cuts
the gradient through those shortcuts; ours keeps the gradient (forward values are identical).

The encoder also carries the attributes that decoders of dynamic-network-architectures read from an encoder
(``output_channels``, ``strides``, ``kernel_sizes``, ``conv_op``, ``norm_op``, ...), with five skips:
the stem (before the max-pool, 1/2 resolution), layer1 (1/4), layer2, layer3 and layer4 (all 1/8), and that
library's weight-transfer keys (``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``) relative to itself.
MedicalNet's file format (head keys, key layout) is read by :mod:`nnunet_transfer.pretrained.formats.medicalnet`;
:func:`nnunet_transfer.transfer.medicalnet.load_medicalnet` loads a released file into this encoder.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Med3DResNet",
    "BasicBlock",
    "Bottleneck",
    "ZeroPadShortcut",
    "RESNET_LAYOUTS",
    "DEFAULT_SHORTCUT",
    "describe_architecture",
]

#: depth -> (block type name, blocks per layer), as in MedicalNet's resnet10 ... resnet200.
RESNET_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
#: Shortcut type of MedicalNet's released checkpoints (its README's ``--resnet_shortcut``).
DEFAULT_SHORTCUT: dict[int, str] = {10: "B", 18: "A", 34: "A", 50: "B", 101: "B", 152: "B", 200: "B"}

_LAYER_PLANES = (64, 128, 256, 512)
#: Below this many voxels on the first spatial axis, conv1's CPU weight gradient is wrong (see ``_conv1``).
_ONEDNN_SAFE_DEPTH = 8
_LAYER_DILATIONS = (1, 1, 2, 4)
StrideLike = Union[int, Sequence[int]]


def _triple(value: StrideLike, name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3 or any(v < 1 for v in value):
        raise ValueError(f"{name} must be a positive int or 3 positive ints, got {value}")
    return value  # type: ignore[return-value]


def _conv3x3x3(in_planes: int, out_planes: int, stride: StrideLike = 1, dilation: int = 1) -> nn.Conv3d:
    """3x3x3 conv whose padding equals its dilation (size-preserving at stride 1), no bias."""
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


class ZeroPadShortcut(nn.Module):
    """MedicalNet shortcut "A": subsample by ``stride`` and append zero channels up to ``out_channels``."""

    def __init__(self, out_channels: int, stride: StrideLike = 1) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = _triple(stride, "stride")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sd, sh, sw = self.stride
        out = x[:, :, ::sd, ::sh, ::sw]  # == avg_pool3d(kernel_size=1, stride=stride)
        missing = self.out_channels - out.shape[1]
        if missing < 0:
            raise RuntimeError(f"ZeroPadShortcut got {out.shape[1]} channels, more than "
                               f"out_channels={self.out_channels}")
        if missing == 0:
            return out
        zeros = out.new_zeros((out.shape[0], missing, *out.shape[2:]))
        return torch.cat([out, zeros], dim=1)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two dilated 3x3x3 conv-BN layers with a residual connection (ResNet-10/18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: StrideLike = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3x3(inplanes, planes, stride=stride, dilation=dilation)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1x1 - dilated/strided 3x3x3 - 1x1x1 (x4 channels) conv-BN layers with a residual (ResNet-50+)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: StrideLike = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3x3x3(planes, planes, stride=stride, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


_BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def describe_architecture(depth: int, shortcut_type: str) -> str:
    """Human-readable description, e.g. ``ResNet-50 (bottleneck blocks [3, 4, 6, 3], shortcut B)``."""
    block, layers = RESNET_LAYOUTS[depth]
    return f"ResNet-{depth} ({block} blocks {list(layers)}, shortcut {shortcut_type})"


class Med3DResNet(nn.Module):
    """MedicalNet's dilated 3D ResNet encoder (no segmentation head), loadable from the released weights.

    Args:
        depth: 10, 18, 34, 50, 101, 152 or 200.
        in_channels: input channels; with more than one, loading MedicalNet weights
            (:func:`~nnunet_transfer.transfer.medicalnet.load_medicalnet`) adapts the pretrained single-channel
            ``conv1`` kernel (tiled over channels, scaled by 1/in_channels).
        shortcut_type: "A" or "B"; default as MedicalNet's released files ("A" for 18/34, "B" otherwise).
        strides: strides of the three downsampling operations (``conv1``, ``maxpool``, ``layer2``), each an int
            or a per-axis triple. Default ``(2, 2, 2)`` is MedicalNet; a 1 on an axis keeps the resolution
            along it (useful for very anisotropic patches) and does not change any weight shape.
        return_skips: :meth:`forward` returns all five feature maps (True) or only layer4 (False).

    ``forward_features(x)`` returns ``(stem, layer1, layer2, layer3, layer4)`` where ``stem`` is
    conv1-BN-ReLU before the max-pool. Spatial sizes for an input of size n (stride-2 axes):
    ceil(n/2), ceil(n/4), ceil(n/8), ceil(n/8), ceil(n/8); odd sizes are fine.
    """

    def __init__(self, depth: int = 50, in_channels: int = 1, shortcut_type: str | None = None,
                 strides: Sequence[StrideLike] = (2, 2, 2), return_skips: bool = True) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"Med3DResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
        shortcut_type = DEFAULT_SHORTCUT[depth] if shortcut_type is None else shortcut_type.upper()
        if shortcut_type not in ("A", "B"):
            raise ValueError(f"shortcut_type must be 'A' or 'B' (or None for MedicalNet's default), "
                             f"got {shortcut_type!r}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if len(strides) != 3:
            raise ValueError(f"strides needs 3 entries (conv1, maxpool, layer2), got {strides!r}")
        stem_stride, pool_stride, layer2_stride = (_triple(s, "strides entry") for s in strides)

        self.depth = depth
        self.in_channels = in_channels
        self.shortcut_type = shortcut_type
        block_name, layers = RESNET_LAYOUTS[depth]
        block = _BLOCKS[block_name]
        self.block_type = block_name
        self.layers_per_stage = layers

        self.conv1 = nn.Conv3d(in_channels, 64, kernel_size=7, stride=stem_stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=pool_stride, padding=1)
        self._inplanes = 64
        layer_strides = ((1, 1, 1), layer2_stride, (1, 1, 1), (1, 1, 1))
        self.layer1 = self._make_layer(block, _LAYER_PLANES[0], layers[0], layer_strides[0], _LAYER_DILATIONS[0])
        self.layer2 = self._make_layer(block, _LAYER_PLANES[1], layers[1], layer_strides[1], _LAYER_DILATIONS[1])
        self.layer3 = self._make_layer(block, _LAYER_PLANES[2], layers[2], layer_strides[2], _LAYER_DILATIONS[2])
        self.layer4 = self._make_layer(block, _LAYER_PLANES[3], layers[3], layer_strides[3], _LAYER_DILATIONS[3])
        del self._inplanes

        # What a decoder (dynamic-network-architectures style) needs to know about this encoder.
        self.return_skips = return_skips
        self.output_channels = [64] + [p * block.expansion for p in _LAYER_PLANES]
        self.strides = [list(stem_stride), list(pool_stride), list(layer2_stride), [1, 1, 1], [1, 1, 1]]
        self.kernel_sizes = [[7, 7, 7]] + [[3, 3, 3] for _ in range(4)]
        self.conv_op = nn.Conv3d
        self.conv_bias = False
        self.norm_op = nn.BatchNorm3d
        self.norm_op_kwargs = {"eps": 1e-5, "momentum": 0.1, "affine": True}
        self.nonlin = nn.ReLU
        self.nonlin_kwargs = {"inplace": True}
        self.dropout_op = None
        self.dropout_op_kwargs = None
        # dynamic-network-architectures' keys, relative to this module (a network holding it prefixes its own
        # name, see architectures.transfer_keys.network_keys). MedicalNet's stem (conv1-bn1-relu-maxpool) is not a
        # submodule of its own: its keys must stay MedicalNet's, so the stem key names its convolution.
        self.key_to_encoder = ""
        self.key_to_stem = "conv1"
        self.keys_to_in_proj = ("conv1",)

        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: tuple[int, int, int],
                    dilation: int) -> nn.Sequential:
        out_planes = planes * block.expansion  # type: ignore[attr-defined]
        downsample: nn.Module | None = None
        if stride != (1, 1, 1) or self._inplanes != out_planes:
            if self.shortcut_type == "A":
                downsample = ZeroPadShortcut(out_planes, stride)
            else:
                downsample = nn.Sequential(
                    nn.Conv3d(self._inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm3d(out_planes),
                )
        modules = [block(self._inplanes, planes, stride=stride, dilation=dilation, downsample=downsample)]
        self._inplanes = out_planes
        modules += [block(self._inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    @property
    def architecture(self) -> str:
        """E.g. ``ResNet-50 (bottleneck blocks [3, 4, 6, 3], shortcut B)``."""
        return describe_architecture(self.depth, self.shortcut_type)

    @property
    def cumulative_strides(self) -> list[list[int]]:
        """Per-axis stride of each skip relative to the input, e.g. [[2]*3, [4]*3, [8]*3, [8]*3, [8]*3]."""
        out, acc = [], [1, 1, 1]
        for s in self.strides:
            acc = [a * b for a, b in zip(acc, s)]
            out.append(list(acc))
        return out

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return ``(stem, layer1, layer2, layer3, layer4)``; ``stem`` is conv1-BN-ReLU before the max-pool."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"Med3DResNet expects input (N, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        stem = self.relu(self.bn1(self._conv1(x)))
        l1 = self.layer1(self.maxpool(stem))
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        return stem, l1, l2, l3, l4

    def _conv1(self, x: torch.Tensor) -> torch.Tensor:
        """``conv1(x)``, working around a PyTorch CPU (oneDNN) bug for thin inputs.

        With torch 2.13 on CPU, the weight gradient of this 7x7x7 stride-2 conv is garbage (and the heap gets
        corrupted) when the first spatial axis has 5-7 voxels. Zero-padding that axis to 8 at the end gives
        the same outputs (the conv pads with zeros anyway) after cropping, and a correct gradient.
        """
        depth = x.shape[2]
        if x.device.type != "cpu" or not torch.is_grad_enabled() or depth >= _ONEDNN_SAFE_DEPTH \
                or self.conv1.stride[0] == 1:
            return self.conv1(x)
        out_depth = (depth + 2 * self.conv1.padding[0] - self.conv1.kernel_size[0]) // self.conv1.stride[0] + 1
        padded = F.pad(x, (0, 0, 0, 0, 0, _ONEDNN_SAFE_DEPTH - depth))
        return self.conv1(padded)[:, :, :out_depth]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        """The five skips as a list (``return_skips=True``) or only the layer4 features."""
        feats = self.forward_features(x)
        return list(feats) if self.return_skips else feats[-1]
