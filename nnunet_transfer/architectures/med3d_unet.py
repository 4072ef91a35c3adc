"""Med3D U-Net: a MedicalNet 3D ResNet encoder with a U-Net decoder that nnU-Net can build from plans.

nnU-Net builds it as ``Med3DUNet(input_channels=..., num_classes=..., **arch_kwargs, deep_supervision=...)``
(``network_class_name`` ``nnunet_transfer.architectures.med3d_unet.Med3DUNet``). The network has
``encoder`` (a :class:`~nnunet_transfer.architectures.med3d.Med3DResNet`, state-dict keys ``encoder.*`` equal
MedicalNet's) and ``decoder`` (new layers, with the ``deep_supervision`` flag that nnU-Net's
``set_deep_supervision_enabled`` toggles and the heads in ``decoder.seg_layers``, which nnU-Net's
``-pretrained_weights`` loading skips).

Resolution levels. The encoder gives five skips: stem (1/2), layer1 (1/4), layer2/3/4 (1/8, dilated). The
decoder fuses them deepest first (layer3, layer2 at 1/8, then layer1, stem) and adds a full-resolution stage
fed by a small conv on the input image, so the prediction has the input's size. nnU-Net derives its
deep-supervision targets from ``arch_kwargs["strides"]`` (its ``pool_op_kernel_sizes``): scale k is
``1 / cumprod(strides)[k]`` for all but the last entry. Here ``strides`` is one entry per distinct
resolution: ``[[1,1,1], conv1 stride, maxpool stride, layer2 stride]`` (default all 2), so deep
supervision yields three outputs, full resolution first, then 1/2 and 1/4; their sizes follow nnU-Net's
rule ``round(size * scale)`` for any patch size (odd, anisotropic), and :func:`med3d_plans_entry` picks a
patch size divisible by the total stride so that no cropping is needed at all.
"""

from __future__ import annotations

import math
import pydoc
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU, StackedConvBlocks
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnunet_transfer.architectures.transfer_keys import network_keys
from nnunet_transfer.architectures.med3d import DEFAULT_SHORTCUT, RESNET_LAYOUTS, Med3DResNet

__all__ = [
    "Med3DUNet",
    "Med3DUNetDecoder",
    "MED3D_UNET_CLASS_NAME",
    "DEFAULT_DECODER_FEATURES",
    "DEFAULT_PLAN_STRIDES",
    "med3d_plans_entry",
    "apply_med3d_plans_entry",
    "deep_supervision_sizes",
    "fit_spatial_size",
]

MED3D_UNET_CLASS_NAME = "nnunet_transfer.architectures.med3d_unet.Med3DUNet"
#: Decoder widths, deepest stage first: layer3 fusion, layer2 fusion (both 1/8), layer1 (1/4), stem (1/2), full.
DEFAULT_DECODER_FEATURES: tuple[int, ...] = (256, 256, 128, 64, 32)
#: MedicalNet's geometry in nnU-Net's ``pool_op_kernel_sizes`` form: input, conv1, maxpool, layer2.
DEFAULT_PLAN_STRIDES: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))


def _locate(obj: Any, name: str) -> Any:
    """Accept a class or its dotted import path (as nnU-Net plans store them)."""
    if obj is None or not isinstance(obj, str):
        return obj
    found = pydoc.locate(obj)
    if found is None:
        raise ImportError(f"Med3DUNet: cannot import {name}={obj!r}; give a class or a dotted path such as "
                          f"'torch.nn.InstanceNorm3d'")
    return found


def _normalise_plan_strides(strides: Sequence[Sequence[int] | int] | None) -> list[list[int]]:
    strides = DEFAULT_PLAN_STRIDES if strides is None else strides
    out = [[int(s)] * 3 if isinstance(s, int) else [int(v) for v in s] for s in strides]
    if len(out) != 4 or any(len(s) != 3 for s in out) or any(v not in (1, 2) for s in out for v in s) \
            or out[0] != [1, 1, 1]:
        raise ValueError(
            f"Med3DUNet strides must be 4 per-axis entries [[1,1,1], conv1, maxpool, layer2] with values 1 or 2 "
            f"(nnU-Net's pool_op_kernel_sizes for this network), got {strides!r}; med3d_plans_entry() writes them"
        )
    return out


def deep_supervision_sizes(input_size: Sequence[int], plan_strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Spatial sizes of nnU-Net's deep-supervision targets for a patch of ``input_size``, highest first.

    Same rule as nnU-Net: scale k = 1 / cumprod(strides)[k] for k < len(strides) - 1, target size
    ``round(size * scale)`` per axis.
    """
    sizes, acc = [], [1] * len(input_size)
    for s in list(plan_strides)[:-1]:
        acc = [a * b for a, b in zip(acc, s)]
        sizes.append([round(n * (1 / a)) for n, a in zip(input_size, acc)])
    return sizes


def fit_spatial_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop or replicate-pad the trailing end of each spatial axis of ``x`` (N, C, *spatial) to ``size``.

    Used where an upsampled map is one voxel larger than its skip (odd sizes) and where a deep-supervision
    output must have nnU-Net's target size. Cropping/padding at the end keeps voxel i aligned with voxel i.
    """
    current = list(x.shape[2:])
    if current == list(size):
        return x
    x = x[(slice(None), slice(None), *[slice(0, min(c, s)) for c, s in zip(current, size)])]
    pad: list[int] = []
    for c, s in zip(reversed(x.shape[2:]), reversed(list(size))):
        pad += [0, max(0, s - c)]
    if any(pad):
        x = F.pad(x, pad, mode="replicate")
    return x


class Med3DUNetDecoder(nn.Module):
    """U-Net decoder over a :class:`Med3DResNet`'s five skips plus a full-resolution input branch.

    Stage s (deepest first) upsamples the map below it to the next skip's resolution (transposed conv with
    kernel = stride, or a 1x1x1 conv where the stride is 1), projects the skip to ``features[s]`` channels
    with a 1x1x1 conv-norm-nonlin (the ResNet skips are wide: up to 2048 channels), concatenates both and
    applies ``n_conv_per_stage`` 3x3x3 conv-norm-nonlin blocks. The last stage's skip is ``input_block``, a
    3x3x3 conv-norm-nonlin on the image itself, so the output has the input's full resolution.
    ``seg_layers`` (1x1x1 convs, deepest first, like dynamic-network-architectures' ``UNetDecoder``) give the
    logits at 1/4, 1/2 and full resolution.
    """

    def __init__(self, encoder: Med3DResNet, input_channels: int, num_classes: int,
                 plan_strides: Sequence[Sequence[int]], features: Sequence[int] = DEFAULT_DECODER_FEATURES,
                 n_conv_per_stage: int | Sequence[int] = 2, deep_supervision: bool = False,
                 norm_op: type[nn.Module] | None = nn.InstanceNorm3d, norm_op_kwargs: dict | None = None,
                 nonlin: type[nn.Module] | None = nn.LeakyReLU, nonlin_kwargs: dict | None = None,
                 dropout_op: type[nn.Module] | None = None, dropout_op_kwargs: dict | None = None,
                 conv_bias: bool = True) -> None:
        super().__init__()
        n_stages = len(encoder.output_channels)  # 4 fusions with encoder skips + 1 full-resolution stage
        features = [int(f) for f in features]
        if len(features) != n_stages:
            raise ValueError(f"decoder_features needs {n_stages} entries (layer3, layer2, layer1, stem, full "
                             f"resolution), got {features}")
        if isinstance(n_conv_per_stage, int):
            n_conv_per_stage = [n_conv_per_stage] * n_stages
        if len(n_conv_per_stage) != n_stages:
            raise ValueError(f"n_conv_per_stage_decoder needs {n_stages} entries, got {list(n_conv_per_stage)}")
        norm_op_kwargs = {"eps": 1e-5, "affine": True} if norm_op_kwargs is None else dict(norm_op_kwargs)
        nonlin_kwargs = {"negative_slope": 1e-2, "inplace": True} if nonlin_kwargs is None else dict(nonlin_kwargs)
        common = dict(conv_bias=conv_bias, norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, dropout_op=dropout_op,
                      dropout_op_kwargs=dropout_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)

        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        self.plan_strides = [list(s) for s in plan_strides]
        self.features = features
        skip_channels = list(reversed(encoder.output_channels[:-1])) + [features[-1]]  # l3, l2, l1, stem, input
        # Stride between the map below and the skip of each stage, deepest first (layer4->layer3 ... stem->input).
        up_strides = list(reversed(encoder.strides))

        self.input_block = ConvDropoutNormReLU(nn.Conv3d, input_channels, features[-1], 3, 1, **common)
        below = encoder.output_channels[-1]
        transpconvs, laterals, stages = [], [], []
        for s in range(n_stages):
            if all(v == 1 for v in up_strides[s]):
                transpconvs.append(nn.Conv3d(below, features[s], kernel_size=1, bias=conv_bias))
            else:
                transpconvs.append(nn.ConvTranspose3d(below, features[s], kernel_size=up_strides[s],
                                                      stride=up_strides[s], bias=conv_bias))
            if s < n_stages - 1:
                laterals.append(ConvDropoutNormReLU(nn.Conv3d, skip_channels[s], features[s], 1, 1, **common))
            else:
                laterals.append(nn.Identity())  # input_block already has features[-1] channels
            stages.append(StackedConvBlocks(n_conv_per_stage[s], nn.Conv3d, 2 * features[s], features[s], 3, 1,
                                            **common))
            below = features[s]
        self.transpconvs = nn.ModuleList(transpconvs)
        self.laterals = nn.ModuleList(laterals)
        self.stages = nn.ModuleList(stages)
        # One head per deep-supervision level (len(plan_strides) - 1 of them), produced by the last stages.
        n_heads = len(self.plan_strides) - 1
        self.head_stages = list(range(n_stages - n_heads, n_stages))
        self.seg_layers = nn.ModuleList(
            nn.Conv3d(features[s], num_classes, kernel_size=1, bias=True) for s in self.head_stages
        )
        self.apply(InitWeights_He(1e-2))

    def forward(self, skips: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """``skips``: the encoder's five maps (stem ... layer4); ``x``: the network input."""
        targets = [list(x.shape[2:])] + [list(t.shape[2:]) for t in skips]  # input, stem, l1, l2, l3, l4
        skip_inputs = list(reversed(skips[:-1])) + [self.input_block(x)]
        skip_sizes = list(reversed(targets[:-1]))
        ds_sizes = deep_supervision_sizes(targets[0], self.plan_strides)  # highest resolution first
        below = skips[-1]
        outputs: list[torch.Tensor] = []
        for s, stage in enumerate(self.stages):
            up = fit_spatial_size(self.transpconvs[s](below), skip_sizes[s])
            below = stage(torch.cat((up, self.laterals[s](skip_inputs[s])), dim=1))
            if s in self.head_stages and (self.deep_supervision or s == len(self.stages) - 1):
                h = self.head_stages.index(s)
                outputs.append(fit_spatial_size(self.seg_layers[h](below), ds_sizes[len(self.head_stages) - 1 - h]))
        outputs = outputs[::-1]
        return outputs if self.deep_supervision else outputs[0]


class Med3DUNet(nn.Module):
    """MedicalNet 3D ResNet encoder + U-Net decoder, built by nnU-Net from plans.

    Args:
        input_channels, num_classes: set by nnU-Net (any number of each).
        depth, shortcut_type: the Med3D encoder (shortcut default as MedicalNet: "A" for 18/34, else "B").
        decoder_features: decoder widths, deepest stage first (5 entries).
        deep_supervision: return ``[full, 1/2, 1/4]`` logits (nnU-Net toggles ``decoder.deep_supervision``).
        strides: nnU-Net's ``pool_op_kernel_sizes`` for this network, ``[[1,1,1], conv1, maxpool, layer2]``;
            the last three configure the encoder's downsampling (default MedicalNet: all 2).
        n_conv_per_stage_decoder: 3x3x3 conv blocks per decoder stage.
        decoder_norm_op/decoder_nonlin (+ kwargs): classes or dotted paths; default InstanceNorm3d and
            LeakyReLU(0.01) as nnU-Net. The encoder keeps MedicalNet's BatchNorm/ReLU so its weights load.

    MedicalNet weights: ``load_medicalnet(net.encoder, path)`` (:mod:`nnunet_transfer.transfer.medicalnet`) after
    construction (nnU-Net's trainer builds the network, then the transfer module loads them). ``key_to_encoder``, ``key_to_stem`` and ``keys_to_in_proj``
    follow dynamic-network-architectures (``encoder``, ``encoder.conv1``, ``("encoder.conv1",)``).
    """

    def __init__(self, input_channels: int, num_classes: int, depth: int = 50, shortcut_type: str | None = None,
                 decoder_features: Sequence[int] = DEFAULT_DECODER_FEATURES, deep_supervision: bool = False,
                 strides: Sequence[Sequence[int] | int] | None = None,
                 n_conv_per_stage_decoder: int | Sequence[int] = 2,
                 decoder_norm_op: type[nn.Module] | str | None = nn.InstanceNorm3d,
                 decoder_norm_op_kwargs: dict | None = None,
                 decoder_nonlin: type[nn.Module] | str | None = nn.LeakyReLU,
                 decoder_nonlin_kwargs: dict | None = None,
                 decoder_dropout_op: type[nn.Module] | str | None = None,
                 decoder_dropout_op_kwargs: dict | None = None) -> None:
        super().__init__()
        plan_strides = _normalise_plan_strides(strides)
        self.encoder = Med3DResNet(depth=depth, in_channels=input_channels, shortcut_type=shortcut_type,
                                   strides=plan_strides[1:], return_skips=True)
        self.decoder = Med3DUNetDecoder(
            self.encoder, input_channels, num_classes, plan_strides, features=decoder_features,
            n_conv_per_stage=n_conv_per_stage_decoder, deep_supervision=deep_supervision,
            norm_op=_locate(decoder_norm_op, "decoder_norm_op"), norm_op_kwargs=decoder_norm_op_kwargs,
            nonlin=_locate(decoder_nonlin, "decoder_nonlin"), nonlin_kwargs=decoder_nonlin_kwargs,
            dropout_op=_locate(decoder_dropout_op, "decoder_dropout_op"), dropout_op_kwargs=decoder_dropout_op_kwargs,
        )
        # weight-transfer keys (dynamic-network-architectures' convention): the decoder's input_block also sees the
        # image, but it is a new layer, not the pretrained input projection
        self.key_to_encoder, self.key_to_stem, self.keys_to_in_proj = network_keys(self.encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder.forward_features(x), x)


def _floor_to_multiple(n: int, m: int) -> int:
    return max(m, (int(n) // m) * m)


def med3d_plans_entry(depth: int, patch_size: Sequence[int], spacing: Sequence[float] | None = None,
                      shortcut_type: str | None = None,
                      decoder_features: Sequence[int] = DEFAULT_DECODER_FEATURES,
                      n_conv_per_stage_decoder: int | Sequence[int] = 2,
                      adapt_strides_to_spacing: bool = False) -> dict:
    """Plans entry (one nnU-Net configuration's architecture and patch size) for a :class:`Med3DUNet`.

    Returns a dict with ``network_class_name``, ``arch_kwargs``, ``_kw_requires_import`` (the three keys of
    a configuration's ``"architecture"`` block), ``patch_size`` and ``pool_op_kernel_sizes`` (the same list
    as ``arch_kwargs["strides"]``: nnU-Net reads its deep-supervision scales from there).

    Strides are MedicalNet's (2 on every axis for conv1, maxpool and layer2) unless
    ``adapt_strides_to_spacing`` is set and ``spacing`` given: then, like nnU-Net's planner, an axis is only
    halved while its current spacing is at most twice the finest one and it still has >= 8 voxels (weight
    shapes do not change, so MedicalNet weights still load). ``patch_size`` is rounded down to a multiple of
    the total stride per axis (at least one multiple), so every deep-supervision target of nnU-Net
    (``round(size / cumulative stride)``) equals the network's output size exactly.
    """
    if depth not in RESNET_LAYOUTS:
        raise ValueError(f"depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
    patch_size = [int(p) for p in patch_size]
    if len(patch_size) != 3:
        raise ValueError(f"Med3DUNet is 3D: patch_size needs 3 entries, got {patch_size}")
    strides = [[1, 1, 1]]
    if adapt_strides_to_spacing:
        if spacing is None or len(spacing) != 3:
            raise ValueError("adapt_strides_to_spacing needs the 3 target spacings (mm) of the configuration")
        cur_spacing, cur_size = [float(s) for s in spacing], list(patch_size)
        for _ in range(3):
            finest = min(cur_spacing)
            step = [2 if (sp <= 2 * finest and n >= 8) else 1 for sp, n in zip(cur_spacing, cur_size)]
            strides.append(step)
            cur_spacing = [sp * st for sp, st in zip(cur_spacing, step)]
            cur_size = [math.ceil(n / st) for n, st in zip(cur_size, step)]
    else:
        strides += [[2, 2, 2]] * 3
    total = [math.prod(s[a] for s in strides) for a in range(3)]
    patch = [_floor_to_multiple(p, t) for p, t in zip(patch_size, total)]
    arch_kwargs = {
        "depth": int(depth),
        "shortcut_type": shortcut_type if shortcut_type is not None else DEFAULT_SHORTCUT[depth],
        "decoder_features": [int(f) for f in decoder_features],
        "strides": strides,
        "n_conv_per_stage_decoder": n_conv_per_stage_decoder if isinstance(n_conv_per_stage_decoder, int)
        else [int(n) for n in n_conv_per_stage_decoder],
        "decoder_norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "decoder_norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "decoder_nonlin": "torch.nn.LeakyReLU",
        "decoder_nonlin_kwargs": {"negative_slope": 0.01, "inplace": True},
        "decoder_dropout_op": None,
        "decoder_dropout_op_kwargs": None,
    }
    return {
        "network_class_name": MED3D_UNET_CLASS_NAME,
        "arch_kwargs": arch_kwargs,
        "_kw_requires_import": ["decoder_norm_op", "decoder_nonlin", "decoder_dropout_op"],
        "patch_size": patch,
        "pool_op_kernel_sizes": [list(s) for s in strides],
    }


def apply_med3d_plans_entry(configuration: dict, entry: dict) -> dict:
    """Return a copy of an nnU-Net plans configuration dict with ``entry``'s architecture and patch size.

    The rest of the configuration (spacing, normalisation, batch size, ...) is kept unchanged.
    """
    import copy

    new = copy.deepcopy(configuration)
    new["architecture"] = {k: copy.deepcopy(entry[k]) for k in ("network_class_name", "arch_kwargs",
                                                                "_kw_requires_import")}
    new["patch_size"] = list(entry["patch_size"])
    return new
