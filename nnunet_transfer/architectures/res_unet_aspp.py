"""Residual U-Net with an ASPP bottleneck: the backbone of the KiTS21 transfer paper (DoDNet/MOTS -> KiTS21).

The paper describes (Sec. 2.3): a residual 3D U-Net with instance norm and LeakyReLU, strided-convolution
downsampling and transposed-convolution upsampling; encoder residual blocks ``conv-IN-conv-IN-conv-IN-LReLU``;
four encoder stages that downsample in their first block and then repeat the basic block 2, 3, 5 and 2 times;
ASPP (DeepLab) at the bottleneck; decoder residual blocks ``conv-IN-LReLU-conv-IN``, one per stage.

This module builds that network from nnU-Net plans. nnU-Net calls the class as
``ResUNetASPP(input_channels=..., num_classes=..., **arch_kwargs, deep_supervision=...)`` with ``arch_kwargs`` in
the style of dynamic_network_architectures' ``ResidualEncoderUNet`` (``n_stages``, ``features_per_stage``,
``conv_op``, ``kernel_sizes``, ``strides``, ``n_blocks_per_stage``, ``n_conv_per_stage_decoder``, ``conv_bias``,
``norm_op``, ``norm_op_kwargs``, ``dropout_op``, ``dropout_op_kwargs``, ``nonlin``, ``nonlin_kwargs``) plus
``aspp_rates``. Anisotropic plans (kernel ``[1, 3, 3]``, stride ``[1, 2, 2]``) work as in nnU-Net.

Design decisions (the paper leaves them open):

* **Encoder block** (:class:`EncoderResidualBlock`): ``conv-IN-conv-IN-conv-IN``, then the shortcut is added,
  then LeakyReLU: ``y = LReLU(IN(conv3(IN(conv2(IN(conv1(x)))))) + shortcut(x))``. This is the paper's block
  read literally (no activation between the three convolutions) with the add placed where ResNet puts it,
  before the final activation. All three convolutions use the stage's kernel size; the first one carries the
  stage's stride. The shortcut is the identity, or a strided 1x1 convolution + IN (ResNet's shortcut B)
  when the block changes resolution or channels.
* **Stages**: ``n_blocks_per_stage[s]`` counts *all* residual blocks of stage ``s``, the first of which
  downsamples (nnU-Net / dynamic_network_architectures convention). The paper's "downsample, then repeat the
  basic block 2, 3, 5, 2 times" is therefore ``3, 4, 6, 3`` (ResNet-34's layout); the planner writes these.
  A stem ``conv-IN-LReLU`` at full resolution comes first (as in nnU-Net's residual encoders).
* **ASPP** (:class:`ASPP`) on the bottleneck, inside the encoder (``encoder.aspp``) so that the encoder's last
  skip, the tensor DoDNet pools for its controller, is the ASPP output and encoder-only transfer includes it.
  Branches: one ``k x k x k`` convolution per rate in ``aspp_rates`` (default ``(1, 2, 4)``: nnU-Net bottlenecks
  are only 4-8 voxels wide, DeepLab's 6/12/18 would see nothing but padding; at width 4, rate 4 degenerates to
  DeepLab's 1x1 branch), each conv-IN-LReLU, plus DeepLab's image-pooling branch (global average, 1x1 conv,
  LReLU; no IN, which is undefined on a single voxel), concatenated and projected by a 1x1 conv-IN-LReLU back
  to ``features_per_stage[-1]`` channels. Dilation applies only along axes whose bottleneck kernel is > 1,
  so an in-plane ``[1, 3, 3]`` kernel stays in-plane. ``aspp_rates=()`` removes the ASPP (plain residual U-Net).
* **Decoder block** (:class:`DecoderResidualBlock`): ``conv-IN-LReLU-conv-IN`` plus the shortcut, literally as
  in the paper (no activation after the add). ``n_conv_per_stage_decoder[s]`` is the number of decoder residual
  blocks per stage (the paper: 1).
* **Skips are concatenated** with the upsampled features (nnU-Net's choice; keeps the encoder's detail
  untouched), so the first decoder block of a stage maps ``2 C -> C`` and has a 1x1 conv + IN shortcut.
* If an input size is not divisible by the strides, the transposed convolution's output is cropped to the
  skip's size (nnU-Net's patch sizes are always divisible, so this only matters for direct use).

State-dict layout (stable, shared by every network built from the same arch kwargs, whatever ``num_classes``,
so MOTS-pretrained weights load into the KiTS network with nnU-Net's ``-pretrained_weights``, which skips
``.seg_layers.``): ``encoder.stem.*``, ``encoder.stages.<s>.<b>.{conv1,conv2,conv3,shortcut}.*``,
``encoder.aspp.*``, ``decoder.transpconvs.<s>.*``, ``decoder.stages.<s>.<b>.*``, ``decoder.seg_layers.<s>.*``.
A network with a different head (e.g. DoDNet's dynamic head) can reuse ``encoder`` and
:meth:`ResUNetASPPDecoder.decode`, which returns the decoder features without the segmentation layers.

Size: about 483 lines, as the paper's one network (residual blocks, ASPP, decoder) with its plans arguments.
"""

from __future__ import annotations

import math
import pydoc
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim, get_matching_convtransp
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_transfer.architectures.transfer_keys import network_keys

#: ASPP dilation rates used when the plans do not say otherwise (see the module docstring for why so small)
DEFAULT_ASPP_RATES: Tuple[int, ...] = (1, 2, 4)
#: Blocks per encoder stage, counting the downsampling block: full-resolution stage 1 block, then the paper's
#: four stages "downsample, then repeat the basic block 2, 3, 5, 2 times" = 3, 4, 6, 3; deeper stages (nnU-Net
#: topologies often have 5-6 downsamplings) repeat the last count. The planners cut this to the number of
#: stages their topology search gives.
PAPER_ENCODER_BLOCKS: Tuple[int, ...] = (1, 3, 4, 6, 3) + (3,) * 8
#: One decoder residual block per stage (paper).
PAPER_DECODER_BLOCKS: Tuple[int, ...] = (1,) * 12

IntOrSeq = Union[int, Sequence[int]]
PerStage = Union[int, Sequence[IntOrSeq]]
OpSpec = Union[None, str, Type[nn.Module]]


def _resolve_op(op: OpSpec, name: str) -> Optional[Type[nn.Module]]:
    """Accept a class or nnU-Net's dotted-path string for ``conv_op``/``norm_op``/``nonlin``/``dropout_op``."""
    if op is None or isinstance(op, type):
        return op
    if isinstance(op, str):
        located = pydoc.locate(op)
        if located is None:
            raise ValueError(f"ResUNetASPP: {name}={op!r} cannot be imported; give a class or a dotted import path "
                             f"such as 'torch.nn.Conv3d'.")
        return located
    raise TypeError(f"ResUNetASPP: {name} must be a class, a dotted import path or None, got {type(op).__name__}.")


def _per_stage(value: Any, n: int, name: str) -> list:
    """Expand a scalar to ``n`` entries, or check that a sequence has exactly ``n`` entries."""
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"ResUNetASPP: {name} needs {n} entries (one per stage), got {len(values)}: {values}.")
    return values


def _per_axis(value: IntOrSeq, dim: int, name: str) -> Tuple[int, ...]:
    """Expand a scalar to one entry per spatial axis, or check a sequence's length."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * dim
    values = tuple(int(v) for v in value)
    if len(values) != dim:
        raise ValueError(f"ResUNetASPP: {name}={list(values)} must have one entry per spatial axis ({dim}).")
    return values


@dataclass(frozen=True)
class ResUNetASPPTopology:
    """The shape-relevant hyper-parameters of a :class:`ResUNetASPP`, normalised to per-stage, per-axis tuples.

    The network is built from it and the planner's memory estimate is computed from it without building the
    network, so both always agree on the architecture.
    """

    dim: int
    features_per_stage: Tuple[int, ...]
    kernel_sizes: Tuple[Tuple[int, ...], ...]
    strides: Tuple[Tuple[int, ...], ...]
    n_blocks_per_stage: Tuple[int, ...]
    n_blocks_per_stage_decoder: Tuple[int, ...]
    aspp_rates: Tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    @classmethod
    def from_arch_kwargs(cls, dim: int, n_stages: int, features_per_stage: PerStage, kernel_sizes: PerStage,
                         strides: PerStage, n_blocks_per_stage: PerStage, n_conv_per_stage_decoder: PerStage,
                         aspp_rates: Optional[Sequence[int]] = DEFAULT_ASPP_RATES) -> "ResUNetASPPTopology":
        """Validate nnU-Net style arch kwargs and normalise them. Raises ``ValueError`` naming the bad kwarg."""
        if n_stages < 1:
            raise ValueError(f"ResUNetASPP: n_stages must be >= 1, got {n_stages}.")
        features = tuple(int(f) for f in _per_stage(features_per_stage, n_stages, "features_per_stage"))
        kernels = tuple(_per_axis(k, dim, f"kernel_sizes[{i}]")
                        for i, k in enumerate(_per_stage(kernel_sizes, n_stages, "kernel_sizes")))
        strides_ = tuple(_per_axis(s, dim, f"strides[{i}]")
                         for i, s in enumerate(_per_stage(strides, n_stages, "strides")))
        blocks = tuple(int(b) for b in _per_stage(n_blocks_per_stage, n_stages, "n_blocks_per_stage"))
        dec_blocks = tuple(int(b) for b in _per_stage(n_conv_per_stage_decoder, n_stages - 1,
                                                      "n_conv_per_stage_decoder"))
        rates = tuple(int(r) for r in (aspp_rates or ()))
        if any(b < 1 for b in blocks):
            raise ValueError(f"ResUNetASPP: every stage needs at least one residual block (its first block carries "
                             f"the stride), got n_blocks_per_stage={list(blocks)}.")
        if any(b < 1 for b in dec_blocks):
            raise ValueError(f"ResUNetASPP: every decoder stage needs at least one residual block, got "
                             f"n_conv_per_stage_decoder={list(dec_blocks)}.")
        if any(k % 2 == 0 for ks in kernels for k in ks):
            raise ValueError(f"ResUNetASPP: kernel sizes must be odd ('same' padding), got {kernels}.")
        if any(r < 1 for r in rates):
            raise ValueError(f"ResUNetASPP: aspp_rates must be positive integers, got {list(rates)}.")
        return cls(dim, features, kernels, strides_, blocks, dec_blocks, rates)

    def stage_sizes(self, input_size: Sequence[int]) -> List[Tuple[int, ...]]:
        """Spatial size of every encoder stage's output (strided convs with 'same' padding round up)."""
        sizes, size = [], tuple(int(i) for i in input_size)
        for stride in self.strides:
            size = tuple(math.ceil(i / s) for i, s in zip(size, stride))
            sizes.append(size)
        return sizes

    def conv_feature_map_elements(self, input_size: Sequence[int], num_classes: int,
                                  deep_supervision: bool = False) -> int:
        """Number of elements of all convolution outputs for one sample of size ``input_size``.

        The same quantity dynamic_network_architectures' ``compute_conv_feature_map_size`` computes for nnU-Net's
        own networks (one feature map per convolution, norms/activations/concatenations not counted), which the
        experiment planners compare against a reference value to choose patch and batch size.
        """
        if len(input_size) != self.dim:
            raise ValueError(f"ResUNetASPP: input_size {list(input_size)} must be spatial only ({self.dim} axes).")
        f = self.features_per_stage
        sizes = self.stage_sizes(input_size)
        n = int(np.prod(input_size, dtype=np.int64)) * f[0]  # stem
        prev_channels, prev_size = f[0], tuple(input_size)
        for s, size in enumerate(sizes):
            vox = int(np.prod(size, dtype=np.int64))
            for b in range(self.n_blocks_per_stage[s]):
                n += 3 * f[s] * vox
                if b == 0 and (prev_channels != f[s] or tuple(prev_size) != tuple(size)):
                    n += f[s] * vox  # projection shortcut
            prev_channels, prev_size = f[s], size
        if self.aspp_rates:
            vox = int(np.prod(sizes[-1], dtype=np.int64))
            n += len(self.aspp_rates) * f[-1] * vox + f[-1] + f[-1] * vox  # branches, pooling, projection
        for j in range(self.n_stages - 1):  # decoder, lowest resolution first
            s = self.n_stages - 2 - j
            vox = int(np.prod(sizes[s], dtype=np.int64))
            upsampled = [i * k for i, k in zip(sizes[s + 1], self.strides[s + 1])]  # before cropping to the skip
            n += f[s] * int(np.prod(upsampled, dtype=np.int64))  # transposed conv
            n += self.n_blocks_per_stage_decoder[j] * 2 * f[s] * vox + f[s] * vox  # blocks + first block's shortcut
            if deep_supervision or s == 0:
                n += num_classes * vox
        return int(n)


class ConvNormAct(nn.Module):
    """conv (optionally dilated) -> dropout -> norm -> nonlin; any of the last three may be absent.

    'Same' padding: output size = ceil(input size / stride).
    """

    def __init__(self, conv_op: Type[_ConvNd], in_channels: int, out_channels: int, kernel_size: Sequence[int],
                 stride: Sequence[int], dilation: Sequence[int], conv_bias: bool,
                 norm_op: Optional[Type[nn.Module]], norm_op_kwargs: Optional[dict],
                 dropout_op: Optional[Type[nn.Module]], dropout_op_kwargs: Optional[dict],
                 nonlin: Optional[Type[nn.Module]], nonlin_kwargs: Optional[dict]):
        super().__init__()
        padding = [d * (k - 1) // 2 for k, d in zip(kernel_size, dilation)]
        self.conv = conv_op(in_channels, out_channels, list(kernel_size), list(stride), padding=padding,
                            dilation=list(dilation), bias=conv_bias)
        self.dropout = dropout_op(**(dropout_op_kwargs or {})) if dropout_op is not None else None
        self.norm = norm_op(out_channels, **(norm_op_kwargs or {})) if norm_op is not None else None
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.dropout is not None:
            x = self.dropout(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.nonlin is not None:
            x = self.nonlin(x)
        return x


@dataclass(frozen=True)
class _Ops:
    """The layer types and their settings shared by every block of one network."""

    conv_op: Type[_ConvNd]
    conv_bias: bool
    norm_op: Optional[Type[nn.Module]]
    norm_op_kwargs: Optional[dict]
    dropout_op: Optional[Type[nn.Module]]
    dropout_op_kwargs: Optional[dict]
    nonlin: Optional[Type[nn.Module]]
    nonlin_kwargs: Optional[dict]

    @property
    def dim(self) -> int:
        return convert_conv_op_to_dim(self.conv_op)

    def conv(self, cin: int, cout: int, kernel: Sequence[int], stride: Optional[Sequence[int]] = None,
             dilation: Optional[Sequence[int]] = None, norm: bool = True, act: bool = True) -> ConvNormAct:
        one = (1,) * self.dim
        return ConvNormAct(self.conv_op, cin, cout, kernel, stride or one, dilation or one, self.conv_bias,
                           self.norm_op if norm else None, self.norm_op_kwargs,
                           self.dropout_op, self.dropout_op_kwargs,
                           self.nonlin if act else None, self.nonlin_kwargs)

    def make_nonlin(self) -> nn.Module:
        return self.nonlin(**(self.nonlin_kwargs or {})) if self.nonlin is not None else nn.Identity()


class _ResidualBlock(nn.Module):
    """Base of both residual blocks: knows its last norm (zeroed at init so that the block starts as identity)."""

    def last_norm(self) -> Optional[nn.Module]:
        raise NotImplementedError


class EncoderResidualBlock(_ResidualBlock):
    """``LReLU(IN(conv3(IN(conv2(IN(conv1(x)))))) + shortcut(x))``; conv1 carries the stride (paper, Sec. 2.3)."""

    def __init__(self, ops: _Ops, in_channels: int, out_channels: int, kernel_size: Sequence[int],
                 stride: Sequence[int]):
        super().__init__()
        self.conv1 = ops.conv(in_channels, out_channels, kernel_size, stride, act=False)
        self.conv2 = ops.conv(out_channels, out_channels, kernel_size, act=False)
        self.conv3 = ops.conv(out_channels, out_channels, kernel_size, act=False)
        needs_projection = in_channels != out_channels or any(s != 1 for s in stride)
        self.shortcut = (ops.conv(in_channels, out_channels, (1,) * ops.dim, stride, act=False)
                         if needs_projection else nn.Identity())
        self.nonlin = ops.make_nonlin()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))

    def last_norm(self) -> Optional[nn.Module]:
        return self.conv3.norm


class DecoderResidualBlock(_ResidualBlock):
    """``IN(conv2(LReLU(IN(conv1(x))))) + shortcut(x)`` (paper, Sec. 2.3: conv-IN-LReLU-conv-IN, ResNet-like)."""

    def __init__(self, ops: _Ops, in_channels: int, out_channels: int, kernel_size: Sequence[int]):
        super().__init__()
        self.conv1 = ops.conv(in_channels, out_channels, kernel_size)
        self.conv2 = ops.conv(out_channels, out_channels, kernel_size, act=False)
        self.shortcut = (ops.conv(in_channels, out_channels, (1,) * ops.dim, act=False)
                         if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + self.shortcut(x)

    def last_norm(self) -> Optional[nn.Module]:
        return self.conv2.norm


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab v3) for N-d feature maps; keeps the channel count.

    ``branches[i]``: kernel ``kernel_size`` dilated by ``rates[i]`` along the axes where the kernel is > 1;
    ``pool_branch``: global average -> 1x1 conv -> nonlin, broadcast back; ``project``: 1x1 conv over the
    concatenation of all branches.
    """

    def __init__(self, ops: _Ops, channels: int, kernel_size: Sequence[int], rates: Sequence[int]):
        super().__init__()
        if not rates:
            raise ValueError("ASPP needs at least one dilation rate.")
        self.rates = tuple(int(r) for r in rates)
        one = (1,) * ops.dim
        self.branches = nn.ModuleList(
            ops.conv(channels, channels, kernel_size, dilation=[r if k > 1 else 1 for k in kernel_size])
            for r in self.rates)
        self.pool_branch = ConvNormAct(ops.conv_op, channels, channels, one, one, one, True, None, None,
                                       None, None, ops.nonlin, ops.nonlin_kwargs)
        self.project = ops.conv((len(self.rates) + 1) * channels, channels, one)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(range(2, x.ndim))
        pooled = self.pool_branch(x.mean(dim=spatial, keepdim=True)).expand(-1, -1, *x.shape[2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class ResUNetASPPEncoder(nn.Module):
    """Stem, residual stages (first block strided), ASPP on the bottleneck. ``forward`` returns the skips.

    Exposes what nnU-Net/dynamic_network_architectures decoders and tools read from an encoder:
    ``output_channels``, ``strides``, ``kernel_sizes``, ``conv_op``, ``norm_op``, ``norm_op_kwargs``,
    ``dropout_op``, ``dropout_op_kwargs``, ``nonlin``, ``nonlin_kwargs``, ``conv_bias``, ``return_skips``, and
    the weight-transfer keys ``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj`` relative to itself.
    """

    def __init__(self, topology: ResUNetASPPTopology, ops: _Ops, input_channels: int, return_skips: bool = True):
        super().__init__()
        t = topology
        self.stem = ops.conv(input_channels, t.features_per_stage[0], t.kernel_sizes[0])
        stages, cin = [], t.features_per_stage[0]
        for s in range(t.n_stages):
            cout = t.features_per_stage[s]
            blocks = [EncoderResidualBlock(ops, cin if b == 0 else cout, cout, t.kernel_sizes[s],
                                           t.strides[s] if b == 0 else (1,) * t.dim)
                      for b in range(t.n_blocks_per_stage[s])]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.aspp = (ASPP(ops, t.features_per_stage[-1], t.kernel_sizes[-1], t.aspp_rates)
                     if t.aspp_rates else None)

        self.output_channels = list(t.features_per_stage)
        self.strides = [list(s) for s in t.strides]
        self.kernel_sizes = [list(k) for k in t.kernel_sizes]
        self.return_skips = return_skips
        self.conv_op, self.conv_bias = ops.conv_op, ops.conv_bias
        self.norm_op, self.norm_op_kwargs = ops.norm_op, ops.norm_op_kwargs
        self.dropout_op, self.dropout_op_kwargs = ops.dropout_op, ops.dropout_op_kwargs
        self.nonlin, self.nonlin_kwargs = ops.nonlin, ops.nonlin_kwargs
        # weight-transfer keys relative to this module (dynamic_network_architectures' convention)
        self.key_to_encoder, self.key_to_stem, self.keys_to_in_proj = "", "stem", ("stem.conv",)

    def forward(self, x: torch.Tensor) -> Union[List[torch.Tensor], torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        if self.aspp is not None:
            skips[-1] = self.aspp(skips[-1])
        return skips if self.return_skips else skips[-1]


class ResUNetASPPDecoder(nn.Module):
    """Transposed conv up, concatenate the skip, residual block(s); one segmentation layer per stage.

    ``deep_supervision`` is read at every forward (nnU-Net toggles ``network.decoder.deep_supervision``).
    The segmentation layers always exist, so weights load whether or not deep supervision was used.
    """

    def __init__(self, topology: ResUNetASPPTopology, ops: _Ops, num_classes: int, deep_supervision: bool):
        super().__init__()
        t = topology
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        transpconv_op = get_matching_convtransp(conv_op=ops.conv_op)
        transpconvs, stages, seg_layers = [], [], []
        for j in range(t.n_stages - 1):
            s = t.n_stages - 2 - j  # the skip this decoder stage merges with
            below, cout, stride = t.features_per_stage[s + 1], t.features_per_stage[s], list(t.strides[s + 1])
            transpconvs.append(transpconv_op(below, cout, stride, stride, bias=ops.conv_bias))
            stages.append(nn.Sequential(*[
                DecoderResidualBlock(ops, 2 * cout if b == 0 else cout, cout, t.kernel_sizes[s])
                for b in range(t.n_blocks_per_stage_decoder[j])]))
            seg_layers.append(ops.conv_op(cout, num_classes, 1, 1, 0, bias=True))
        self.transpconvs = nn.ModuleList(transpconvs)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(seg_layers)

    def decode(self, skips: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Decoder features of every stage, lowest resolution first (the last one is at the skip-0 resolution)."""
        if len(skips) != len(self.stages) + 1:
            raise ValueError(f"ResUNetASPPDecoder expects {len(self.stages) + 1} skips (one per encoder stage), "
                             f"got {len(skips)}.")
        x, features = skips[-1], []
        for j, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            skip = skips[-(j + 2)]
            x = up(x)
            if x.shape[2:] != skip.shape[2:]:  # input size not divisible by the strides: crop the excess
                x = x[(..., *[slice(0, n) for n in skip.shape[2:]])]
            x = stage(torch.cat((x, skip), dim=1))
            features.append(x)
        return features

    def forward(self, skips: Sequence[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
        features = self.decode(skips)
        if not self.deep_supervision:
            return self.seg_layers[-1](features[-1])
        return [seg(f) for seg, f in zip(self.seg_layers, features)][::-1]  # highest resolution first


class ResUNetASPP(AbstractDynamicNetworkArchitectures):
    """Residual U-Net with ASPP bottleneck (KiTS21 transfer paper), configurable from nnU-Net plans.

    See the module docstring for the block definitions and the state-dict layout. ``forward`` returns the
    full-resolution logits, or with deep supervision one output per decoder stage, highest resolution first.
    """

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: PerStage,
                 conv_op: Union[str, Type[_ConvNd]], kernel_sizes: PerStage, strides: PerStage,
                 n_blocks_per_stage: PerStage, num_classes: int, n_conv_per_stage_decoder: PerStage = 1,
                 conv_bias: bool = True, norm_op: OpSpec = None, norm_op_kwargs: Optional[dict] = None,
                 dropout_op: OpSpec = None, dropout_op_kwargs: Optional[dict] = None,
                 nonlin: OpSpec = None, nonlin_kwargs: Optional[dict] = None,
                 deep_supervision: bool = False,
                 aspp_rates: Optional[Sequence[int]] = DEFAULT_ASPP_RATES):
        super().__init__()
        conv_op = _resolve_op(conv_op, "conv_op")
        if conv_op is None:
            raise ValueError("ResUNetASPP: conv_op is required (torch.nn.Conv3d or torch.nn.Conv2d).")
        ops = _Ops(conv_op, bool(conv_bias), _resolve_op(norm_op, "norm_op"), norm_op_kwargs,
                   _resolve_op(dropout_op, "dropout_op"), dropout_op_kwargs,
                   _resolve_op(nonlin, "nonlin"), nonlin_kwargs)
        self.topology = ResUNetASPPTopology.from_arch_kwargs(
            ops.dim, n_stages, features_per_stage, kernel_sizes, strides, n_blocks_per_stage,
            n_conv_per_stage_decoder, aspp_rates)
        self.num_classes = num_classes
        self.encoder = ResUNetASPPEncoder(self.topology, ops, input_channels, return_skips=True)
        self.decoder = ResUNetASPPDecoder(self.topology, ops, num_classes, deep_supervision)
        # where weight-transfer tools (dynamic_network_architectures' convention) find encoder, stem, input conv
        self.key_to_encoder, self.key_to_stem, self.keys_to_in_proj = network_keys(self.encoder)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Elements of all conv outputs for one sample (nnU-Net's VRAM proxy); see ResUNetASPPTopology."""
        return self.topology.conv_feature_map_elements(input_size, self.num_classes, self.decoder.deep_supervision)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He init of (transposed) convs; the last norm of each residual block zeroed (block starts as identity).

        Used as ``network.apply(network.initialize)``; ``apply`` visits children before parents, so a block's
        last norm is zeroed after its convs were initialised.
        """
        InitWeights_He(1e-2)(module)
        if isinstance(module, _ResidualBlock):
            norm = module.last_norm()
            if norm is not None and getattr(norm, "weight", None) is not None:
                nn.init.zeros_(norm.weight)
                nn.init.zeros_(norm.bias)
