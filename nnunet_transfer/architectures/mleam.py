"""MLEAM: 3D multi-scale decoder with pyramid attention and multi-level edge attention, for any DNA-style encoder.

After Qin, "Transfer Learning with Edge Attention for Prostate MRI Segmentation" (MLEAM). The decoder plugs onto an
encoder that exposes what dynamic-network-architectures (DNA) decoders need: ``output_channels`` (list),
``strides`` (per stage, relative to the previous stage; 1 for dilated stages such as Med3D's layer3/layer4),
``conv_op``, ``norm_op``, ``norm_op_kwargs``, ``nonlin``, ``nonlin_kwargs``, ``conv_bias`` (optionally
``kernel_sizes``, ``dropout_op``, ``dropout_op_kwargs``) and ``forward(x) -> list of skips`` (highest resolution
first, bottleneck last).

Decoder level (one per encoder skip, coarsest first)
---------------------------------------------------
``up = transposed conv(previous level)`` (kernel = stride = that stage's stride; kernel 1 for stride-1 stages),
``skip' = PAM(skip, up)``, ``x = RRB(cat(up, skip'))`` (``n_conv_per_stage_decoder`` RRBs; the concatenation is
U-Net's long skip). If the encoder's first stage already downsamples (Med3D's stride-2 stem), one more level
upsamples to input resolution without a skip, so the segmentation is always at input resolution. Upsampled maps are
cropped to the skip's size, so odd patch sizes work (strided convs round up).

* Residual Refinement Block (RRB, from HD-Net / DFN): ``p = norm(conv1x1(x))``;
  ``r = norm(conv_between_slices(nonlin(norm(conv_in_plane(p)))))``; ``out = nonlin(p + r)``. The paper's
  3x3x1 (in-plane) and 1x1x3 (between slices) kernels are written in (x, y, z) order. nnU-Net arrays are
  (z, y, x) with the out-of-plane (lowest resolution) axis first (its ``transpose_forward`` puts it there), so in
  torch ``Conv3d`` kernel terms the in-plane conv is ``(1, 3, 3)`` and the between-slices conv is ``(3, 1, 1)``.
  With ``Conv2d`` (nnU-Net 2d configuration) both convs are 3x3, i.e. DFN's original RRB.
* Pyramid Attention Module (PAM): the encoder skip passes through parallel large-kernel branches (kernel sizes
  ``pam_kernel_sizes``, default 3, 5, 7), concatenated and fused by a 1x1 conv (+ norm + nonlin); the upsampled
  decoder output gives a sigmoid attention ``sigmoid(conv1x1(up))`` that weights the pyramid output, and the skip is
  added back: ``skip' = pyramid(skip) * attention(up) + skip``.
* Multi-level edge attention on the last three decoder levels (the three highest resolutions): a small head
  (conv3 + norm + nonlin + conv1x1 -> 1 channel) predicts edge logits ``e``; the features are gated as
  ``x * (1 + sigmoid(e))``; at the last level, ``sigmoid(e)`` of all three levels is upsampled (bi/trilinear) to the
  final resolution, concatenated with the gated features and fused (conv3 + norm + nonlin) before the final 1x1
  segmentation conv.

Deviations from the paper (which gives no layer-level details): PAM branches use factorised large kernels (one conv
per axis, ``k x 1 x 1``, ``1 x k x 1``, ``1 x 1 x k``, with ``max(8, C // 4)`` channels) instead of dense ``k^3``
kernels, which would cost ``k^3 C^2`` per voxel at full resolution; axes whose encoder kernel size is 1 at that
stage (nnU-Net's anisotropic stages) get no large kernel along them. The RRB projection has a norm layer (helps with
instance norm). The edge gate is residual, ``1 + sigmoid(e)``, so features away from edges are kept, not zeroed.
The extra full-resolution level for encoders with a downsampling stem is ours (the paper's figure does not show it).

Output and edge contract (what an nnU-Net trainer relies on)
------------------------------------------------------------
* ``deep_supervision=False``: ``forward`` returns the segmentation logits tensor (input resolution).
* ``deep_supervision=True``: ``forward`` returns a list of logits, one per decoder level, highest resolution first,
  sizes matching nnU-Net's deep-supervision targets (``MLEAMUNet.deep_supervision_scales()`` gives the scales; for
  the plain encoder they equal nnU-Net's ``_get_deep_supervision_scales``). nnU-Net's ``DeepSupervisionWrapper``
  works on it unchanged; the trainer toggles ``network.decoder.deep_supervision``.
* Every forward stores the edge logits of the last three levels on ``network.last_edge_logits`` (list, highest
  resolution first, one channel each, raw logits, still attached to the graph in training). The edge loss is
  ``nnunet_transfer.losses.mleam_edge.mleam_edge_loss(network.last_edge_logits, seg_targets)`` (edge targets and
  loss weights are the loss's business, not the network's); ``forward_with_edges(x)`` returns
  ``(segmentation output, edge logits)`` explicitly.
* Segmentation 1x1 convs live in ``decoder.seg_layers`` (skipped by nnU-Net's pretrained-weight loading); the edge
  heads do not depend on the number of classes and live in ``decoder.edge_attention``.

Size: about 408 lines, as one network whose parts (encoder adapter, residual refinement blocks, pyramid attention,
edge attention, decoder) exist only for each other.
"""

from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import (
    convert_conv_op_to_dim,
    get_matching_convtransp,
    maybe_convert_scalar_to_list,
)
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnunet_transfer.architectures.encoders import resolve_encoder
from nnunet_transfer.architectures.transfer_keys import network_keys

__all__ = [
    "LayerConfig",
    "ResidualRefinementBlock",
    "PyramidAttentionModule",
    "EdgeAttention",
    "MLEAMDecoder",
    "MLEAMUNet",
]


def _norm(norm_op: Type[nn.Module] | None, channels: int, kwargs: dict | None) -> nn.Module:
    return nn.Identity() if norm_op is None else norm_op(channels, **(kwargs or {}))


def _act(nonlin: Type[nn.Module] | None, kwargs: dict | None) -> nn.Module:
    return nn.Identity() if nonlin is None else nonlin(**(kwargs or {}))


def _conv(conv_op: Type[nn.Module], cin: int, cout: int, kernel: Sequence[int], bias: bool) -> nn.Module:
    return conv_op(cin, cout, tuple(kernel), stride=1, padding=tuple(k // 2 for k in kernel), bias=bias)


def _match_spatial(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop (or zero-pad) ``x`` at the high end of each spatial axis to ``shape``; no-op when sizes agree."""
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    pad = []
    for have, want in zip(reversed(x.shape[2:]), reversed(tuple(shape))):
        pad += [0, want - have]  # negative padding crops
    return F.pad(x, pad)


class LayerConfig:
    """Conv/norm/nonlin/dropout choices shared by all decoder blocks (taken from the encoder unless overridden)."""

    def __init__(self, conv_op: Type[nn.Module], norm_op: Type[nn.Module] | None, norm_op_kwargs: dict | None,
                 nonlin: Type[nn.Module] | None, nonlin_kwargs: dict | None, conv_bias: bool,
                 dropout_op: Type[nn.Module] | None = None, dropout_op_kwargs: dict | None = None):
        self.conv_op = conv_op
        self.ndim = convert_conv_op_to_dim(conv_op)
        self.norm_op = norm_op
        self.norm_op_kwargs = norm_op_kwargs
        self.nonlin = nonlin
        self.nonlin_kwargs = nonlin_kwargs
        self.conv_bias = bool(conv_bias)
        self.dropout_op = dropout_op
        self.dropout_op_kwargs = dropout_op_kwargs

    def conv_norm_act(self, cin: int, cout: int, kernel: Sequence[int] | int, act: bool = True) -> nn.Sequential:
        kernel = maybe_convert_scalar_to_list(self.conv_op, kernel)
        layers = [_conv(self.conv_op, cin, cout, kernel, self.conv_bias),
                  _norm(self.norm_op, cout, self.norm_op_kwargs)]
        if act:
            layers.append(_act(self.nonlin, self.nonlin_kwargs))
        return nn.Sequential(*layers)

    def dropout(self) -> nn.Module:
        return nn.Identity() if self.dropout_op is None else self.dropout_op(**(self.dropout_op_kwargs or {}))


class ResidualRefinementBlock(nn.Module):
    """RRB: 1x1 projection, then a residual branch of an in-plane conv and a between-slices conv (see module doc).

    3D kernels in torch (z, y, x) order: ``in_plane`` is (1, 3, 3), ``between_slices`` is (3, 1, 1). 2D: both 3x3.
    """

    def __init__(self, cfg: LayerConfig, in_channels: int, out_channels: int):
        super().__init__()
        if cfg.ndim == 3:
            in_plane_kernel, between_kernel = (1, 3, 3), (3, 1, 1)
        elif cfg.ndim == 2:
            in_plane_kernel, between_kernel = (3, 3), (3, 3)
        else:
            raise ValueError(f"ResidualRefinementBlock supports Conv2d/Conv3d, got {cfg.conv_op}.")
        self.project = cfg.conv_norm_act(in_channels, out_channels, 1, act=False)
        self.in_plane = _conv(cfg.conv_op, out_channels, out_channels, in_plane_kernel, cfg.conv_bias)
        self.in_plane_norm = _norm(cfg.norm_op, out_channels, cfg.norm_op_kwargs)
        self.in_plane_act = _act(cfg.nonlin, cfg.nonlin_kwargs)
        self.dropout = cfg.dropout()
        self.between_slices = _conv(cfg.conv_op, out_channels, out_channels, between_kernel, cfg.conv_bias)
        self.between_slices_norm = _norm(cfg.norm_op, out_channels, cfg.norm_op_kwargs)
        self.out_act = _act(cfg.nonlin, cfg.nonlin_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.project(x)
        r = self.dropout(self.in_plane_act(self.in_plane_norm(self.in_plane(p))))
        r = self.between_slices_norm(self.between_slices(r))
        return self.out_act(p + r)


class PyramidAttentionModule(nn.Module):
    """PAM: ``pyramid(skip) * sigmoid(conv1x1(up)) + skip`` with parallel factorised large-kernel branches.

    ``large_kernel_axes`` flags the spatial axes that get the large kernels (default: all); a branch whose axes are
    all off reduces to a 1x1 conv.
    """

    def __init__(self, cfg: LayerConfig, channels: int, kernel_sizes: Sequence[int] = (3, 5, 7),
                 large_kernel_axes: Sequence[bool] | None = None):
        super().__init__()
        if not kernel_sizes:
            raise ValueError("PyramidAttentionModule: kernel_sizes must name at least one kernel size.")
        if any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"PyramidAttentionModule: kernel sizes must be odd and >= 1, got {tuple(kernel_sizes)}.")
        axes = [True] * cfg.ndim if large_kernel_axes is None else [bool(a) for a in large_kernel_axes]
        if len(axes) != cfg.ndim:
            raise ValueError(f"PyramidAttentionModule: large_kernel_axes needs {cfg.ndim} entries, got {axes}.")
        branch_channels = min(channels, max(8, channels // 4))
        branches = []
        for k in kernel_sizes:
            convs = []
            cin = channels
            for axis in (a for a in range(cfg.ndim) if axes[a] and k > 1):
                kernel = [1] * cfg.ndim
                kernel[axis] = k
                convs.append(_conv(cfg.conv_op, cin, branch_channels, kernel, cfg.conv_bias))
                cin = branch_channels
            if not convs:
                convs.append(_conv(cfg.conv_op, cin, branch_channels, [1] * cfg.ndim, cfg.conv_bias))
            convs += [_norm(cfg.norm_op, branch_channels, cfg.norm_op_kwargs), _act(cfg.nonlin, cfg.nonlin_kwargs)]
            branches.append(nn.Sequential(*convs))
        self.branches = nn.ModuleList(branches)
        self.fuse = cfg.conv_norm_act(branch_channels * len(kernel_sizes), channels, 1)
        self.attention = cfg.conv_op(channels, channels, 1, bias=True)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        pyramid = self.fuse(torch.cat([b(skip) for b in self.branches], dim=1))
        return pyramid * torch.sigmoid(self.attention(up)) + skip


class EdgeAttention(nn.Module):
    """Edge head + gate: returns ``(x * (1 + sigmoid(e)), e)`` with ``e`` the one-channel edge logits."""

    def __init__(self, cfg: LayerConfig, channels: int):
        super().__init__()
        hidden = max(8, channels // 2)
        self.head = nn.Sequential(cfg.conv_norm_act(channels, hidden, 3), cfg.conv_op(hidden, 1, 1, bias=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        edge_logits = self.head(x)
        return x * (1 + torch.sigmoid(edge_logits)), edge_logits


class MLEAMDecoder(nn.Module):
    """MLEAM decoder for a DNA-style encoder (see the module docstring for structure and output contract).

    ``n_conv_per_stage_decoder`` is read as the number of RRBs per level (int or one entry per skip level, coarsest
    first, like nnU-Net's plans; the paper uses 1). ``norm_op``/``norm_op_kwargs`` override the encoder's, e.g.
    instance norm for a batch-norm Med3D encoder trained with nnU-Net's small batches.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, deep_supervision: bool = False,
                 n_conv_per_stage_decoder: int | Sequence[int] = 1,
                 pam_kernel_sizes: Sequence[int] = (3, 5, 7), n_edge_levels: int = 3,
                 norm_op: Type[nn.Module] | None = None, norm_op_kwargs: dict | None = None):
        super().__init__()
        missing = [a for a in ("output_channels", "strides", "conv_op", "norm_op", "norm_op_kwargs", "nonlin",
                               "nonlin_kwargs", "conv_bias") if not hasattr(encoder, a)]
        if missing:
            raise TypeError(
                f"MLEAMDecoder: encoder {type(encoder).__name__} lacks attribute(s) {missing}; it must expose the "
                "dynamic-network-architectures encoder interface (see PlainConvEncoder)."
            )
        channels = list(encoder.output_channels)
        n_stages = len(channels)
        if n_stages < 2:
            raise ValueError(f"MLEAMDecoder: encoder {type(encoder).__name__} has {n_stages} stage(s); need >= 2.")
        if len(encoder.strides) != n_stages:
            raise ValueError(
                f"MLEAMDecoder: encoder {type(encoder).__name__} has {n_stages} output_channels but "
                f"{len(encoder.strides)} strides; give one stride per stage."
            )
        cfg = LayerConfig(
            encoder.conv_op,
            encoder.norm_op if norm_op is None else norm_op,
            encoder.norm_op_kwargs if norm_op is None else norm_op_kwargs,
            encoder.nonlin, encoder.nonlin_kwargs, encoder.conv_bias,
            getattr(encoder, "dropout_op", None), getattr(encoder, "dropout_op_kwargs", None),
        )
        strides = [tuple(int(s) for s in maybe_convert_scalar_to_list(cfg.conv_op, st)) for st in encoder.strides]
        kernel_sizes = getattr(encoder, "kernel_sizes", None)
        full_res_level = any(s != 1 for s in strides[0])
        n_levels = n_stages - 1 + int(full_res_level)
        if isinstance(n_conv_per_stage_decoder, int):
            n_rrb = [n_conv_per_stage_decoder] * n_levels
        else:
            n_rrb = list(n_conv_per_stage_decoder)
            if len(n_rrb) == n_stages - 1 and full_res_level:
                n_rrb.append(n_rrb[-1])
        if len(n_rrb) != n_levels or any(n < 1 for n in n_rrb):
            raise ValueError(
                f"MLEAMDecoder: n_conv_per_stage_decoder={n_conv_per_stage_decoder} must be a positive int or list of "
                f"{n_stages - 1} positive ints (one per skip level, coarsest first)."
            )
        if n_edge_levels < 1:
            raise ValueError(f"MLEAMDecoder: n_edge_levels must be >= 1, got {n_edge_levels}.")

        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        self.n_levels = n_levels
        self.n_edge_levels = min(n_edge_levels, n_levels)
        self.full_res_level = full_res_level
        self.strides = strides
        transp_op = get_matching_convtransp(conv_op=cfg.conv_op)

        upsamplers, pams, stages, seg_layers, level_channels = [], [], [], [], []
        for level in range(n_levels):
            skip_idx = n_stages - 2 - level  # -1: the extra full-resolution level
            below = channels[skip_idx + 1] if level == 0 else level_channels[-1]
            stride = strides[skip_idx + 1]
            if skip_idx >= 0:
                out_ch = channels[skip_idx]
                axes = None
                if kernel_sizes is not None:
                    ks = maybe_convert_scalar_to_list(cfg.conv_op, kernel_sizes[skip_idx])
                    axes = [k > 1 for k in ks]
                pams.append(PyramidAttentionModule(cfg, out_ch, pam_kernel_sizes, axes))
                cin = 2 * out_ch
            else:
                out_ch = max(8, channels[0] // 2)
                pams.append(nn.Identity())
                cin = out_ch
            upsamplers.append(transp_op(below, out_ch, stride, stride, bias=cfg.conv_bias))
            blocks = [ResidualRefinementBlock(cfg, cin if i == 0 else out_ch, out_ch) for i in range(n_rrb[level])]
            stages.append(nn.Sequential(*blocks))
            seg_layers.append(cfg.conv_op(out_ch, num_classes, 1, 1, 0, bias=True))
            level_channels.append(out_ch)
        self.upsamplers = nn.ModuleList(upsamplers)
        self.pams = nn.ModuleList(pams)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(seg_layers)
        self.edge_attention = nn.ModuleList(
            EdgeAttention(cfg, level_channels[level]) for level in range(n_levels - self.n_edge_levels, n_levels)
        )
        self.edge_fusion = cfg.conv_norm_act(level_channels[-1] + self.n_edge_levels, level_channels[-1], 3)
        self.level_channels = level_channels
        self.last_edge_logits: list[torch.Tensor] = []

    def forward(self, skips: Sequence[torch.Tensor], output_size: Sequence[int] | None = None):
        """Decode encoder skips (highest resolution first). ``output_size``: spatial size of the network input, used
        to crop the extra full-resolution level (encoders with a downsampling stem). Stores ``last_edge_logits``."""
        x = skips[-1]
        seg_outputs, edge_logits = [], []
        first_edge_level = self.n_levels - self.n_edge_levels
        n_skips = len(skips)
        for level in range(self.n_levels):
            skip_idx = n_skips - 2 - level
            up = self.upsamplers[level](x)
            if skip_idx >= 0:
                skip = skips[skip_idx]
                up = _match_spatial(up, skip.shape[2:])
                x = torch.cat((up, self.pams[level](skip, up)), dim=1)
            else:
                x = up if output_size is None else _match_spatial(up, output_size)
            x = self.stages[level](x)
            if level >= first_edge_level:
                x, e = self.edge_attention[level - first_edge_level](x)
                edge_logits.append(e)
            if level == self.n_levels - 1:
                size = x.shape[2:]
                mode = "trilinear" if x.ndim == 5 else "bilinear"
                edge_maps = [torch.sigmoid(e if e.shape[2:] == size else
                                           F.interpolate(e, size=size, mode=mode, align_corners=False))
                             for e in edge_logits]
                x = self.edge_fusion(torch.cat([x, *edge_maps], dim=1))
                seg_outputs.append(self.seg_layers[level](x))
            elif self.deep_supervision:
                seg_outputs.append(self.seg_layers[level](x))
        self.last_edge_logits = edge_logits[::-1]
        if not self.deep_supervision:
            return seg_outputs[-1]
        return seg_outputs[::-1]


class MLEAMUNet(nn.Module):
    """Encoder + :class:`MLEAMDecoder`, constructible by nnU-Net from plans.

    ``encoder`` names an entry of the encoder registry (:mod:`nnunet_transfer.architectures.encoders`), built with
    ``encoder_kwargs``: ``"plain"`` takes exactly the plans' ``PlainConvUNet`` kwargs (``n_stages``,
    ``features_per_stage``, ``conv_op``, ``kernel_sizes``, ``strides``, ``n_conv_per_stage``, ``conv_bias``,
    ``norm_op``, ``norm_op_kwargs``, ``dropout_op``, ``dropout_op_kwargs``, ``nonlin``, ``nonlin_kwargs``);
    ``"med3d-resnetN"`` (or ``"med3d"`` with ``depth=N``, as plans store it) takes Med3DResNet's ``shortcut_type``
    and ``strides``. ``n_conv_per_stage_decoder`` is the number of RRBs per decoder level;
    ``decoder_norm_op``/``decoder_norm_op_kwargs`` can replace the encoder's norm in the decoder (e.g. Med3D's batch
    norm). ``pam_kernel_sizes``/``n_edge_levels`` configure the decoder (see module docstring).
    """

    def __init__(self, input_channels: int, num_classes: int, encoder: str = "plain", deep_supervision: bool = False,
                 n_conv_per_stage_decoder: int | Sequence[int] = 1, pam_kernel_sizes: Sequence[int] = (3, 5, 7),
                 n_edge_levels: int = 3, decoder_norm_op: Type[nn.Module] | None = None,
                 decoder_norm_op_kwargs: dict | None = None, **encoder_kwargs):
        super().__init__()
        spec, encoder_kwargs = resolve_encoder(encoder, encoder_kwargs)
        self.encoder = spec.build(input_channels, **encoder_kwargs)
        self.encoder_name = encoder
        self.key_to_encoder, self.key_to_stem, self.keys_to_in_proj = network_keys(self.encoder)
        self.decoder = MLEAMDecoder(self.encoder, num_classes, deep_supervision, n_conv_per_stage_decoder,
                                    pam_kernel_sizes, n_edge_levels, decoder_norm_op, decoder_norm_op_kwargs)

    def forward(self, x: torch.Tensor):
        """Segmentation logits (tensor), or the deep-supervision list (highest resolution first) when
        ``decoder.deep_supervision`` is on. Edge logits are left on ``last_edge_logits``."""
        skips = self.encoder(x)
        if isinstance(skips, torch.Tensor):
            raise TypeError(
                f"MLEAMUNet: encoder {type(self.encoder).__name__}.forward returned a single tensor; it must return "
                "the list of skips (PlainConvEncoder needs return_skips=True)."
            )
        return self.decoder(skips, output_size=x.shape[2:])

    def forward_with_edges(self, x: torch.Tensor):
        """``(forward(x), edge logits)`` with the edge logits highest resolution first."""
        out = self.forward(x)
        return out, self.last_edge_logits

    @property
    def last_edge_logits(self) -> list[torch.Tensor]:
        """Edge logits of the last forward, highest resolution first (one channel each)."""
        return self.decoder.last_edge_logits

    def deep_supervision_scales(self) -> list[list[float]]:
        """Scale of every deep-supervision output relative to the input, highest resolution first (what nnU-Net's
        ``DownsampleSegForDSTransform`` takes). For the plain encoder this equals nnU-Net's own
        ``_get_deep_supervision_scales`` (cumulative pooling of all stages but the bottleneck)."""
        cumulative = np.cumprod(np.array(self.decoder.strides, dtype=float), axis=0)
        scales = [list(1.0 / c) for c in cumulative[:-1]]
        if self.decoder.full_res_level:
            scales.insert(0, [1.0] * len(self.decoder.strides[0]))
        return [[float(s) for s in sc] for sc in scales]

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He initialisation of convs (nnU-Net applies it via ``network.apply(network.initialize)``)."""
        InitWeights_He(1e-2)(module)
