"""The network registry: whole networks (not encoders) that ``plan-arch`` can put into nnU-Net's plans, by name.

Each :class:`NetworkSpec` says which class nnU-Net builds (``network_class_name`` of the plans), the arguments its
name fixes (the released checkpoints' configuration), the input-size multiple and minimum it needs, and whether it
has deep-supervision outputs. :func:`network_configuration` turns a configuration of nnU-Net's plans into one for the
network: everything that decides the preprocessed data stays, the architecture is replaced and the patch size is
made to fit, and every change is stated in the returned notes. Input channels and classes come from nnU-Net (its
trainer passes them to the class), so one plans file serves any number of modalities and labels.

Entries (one per architecture): ``stunet-{s,b,l,h}``, ``genesis-unet3d`` and ``suprem-unet`` (the same UNet3D),
``dodnet-unet3d``, ``swinunetr`` (v1: SuPreM, Universal Model), ``swinunetr-v2`` (VoCo), ``segresnet`` (SuPreM).
The MONAI networks need ``pip install nnunet-transfer[monai]``; nothing here imports MONAI or builds a network.
Adding an architecture is one class and one :class:`NetworkSpec` in :data:`NETWORKS`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from nnunet_transfer.architectures.public.dodnet_unet3d import DODNET_LAYERS, DODNET_STRIDES
from nnunet_transfer.architectures.public.stunet import STUNET_SIZES, stunet_strides
from nnunet_transfer.architectures.public.switch import SWIN_STRIDES
from nnunet_transfer.architectures.public.unet3d import UNET3D_STRIDES

__all__ = ["NetworkSpec", "NETWORKS", "network_configuration", "architecture_names", "fit_patch_size"]

_PUBLIC = "nnunet_transfer.architectures.public"


def _fixed_strides(strides: Sequence[Sequence[int]]) -> Callable[[Sequence[Sequence[int]]], List[List[int]]]:
    def rule(_plans_strides: Sequence[Sequence[int]]) -> List[List[int]]:
        return [list(s) for s in strides]
    return rule


@dataclass(frozen=True)
class NetworkSpec:
    """One registered network (see the module docstring).

    ``strides(plans_strides)`` gives the nnU-Net ``strides`` (input stage first) the network uses for these plans;
    the patch size must be a multiple of their product per axis and at least ``min_patch`` per axis.
    ``fixed_kwargs`` are written into the plans' ``arch_kwargs`` next to ``strides``. ``families`` names the
    pretrained releases whose weights this network takes (shown by ``plan-arch`` and in the docs).
    """

    name: str
    class_name: str
    description: str
    strides: Callable[[Sequence[Sequence[int]]], List[List[int]]]
    fixed_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    families: Tuple[str, ...] = ()
    deep_supervision: bool = False
    min_patch: int = 1
    constraint: str = ""
    #: pip extra the class needs (``monai``), None when it needs nothing beyond nnunet-transfer's dependencies
    extra: Optional[str] = None
    #: the ``arch_kwargs`` name under which the network takes the patch size (a transformer's token grid), if any
    patch_as: Optional[str] = None


def _stunet(size: str) -> NetworkSpec:
    depth, dims = STUNET_SIZES[size]
    return NetworkSpec(
        f"stunet-{size}", f"{_PUBLIC}.stunet.STUNet", f"STU-Net-{size.upper()} (uni-medical/STU-Net)", stunet_strides,
        MappingProxyType({"depth": list(depth), "dims": list(dims)}), ("STU-Net",), deep_supervision=True,
        constraint="3x3x3 kernels and five downsamplings (the plans' first five; [1, 1, 1] added when fewer)")


NETWORKS: Dict[str, NetworkSpec] = {
    **{f"stunet-{size}": _stunet(size) for size in STUNET_SIZES},
    "genesis-unet3d": NetworkSpec(
        "genesis-unet3d", f"{_PUBLIC}.unet3d.UNet3D", "Models Genesis UNet3D (MrGiovanni/ModelsGenesis)",
        _fixed_strides(UNET3D_STRIDES), MappingProxyType({"act": "relu", "batch_statistics": True}),
        ("Models Genesis",), constraint="three fixed downsamplings by 2"),
    "suprem-unet": NetworkSpec(
        "suprem-unet", f"{_PUBLIC}.unet3d.UNet3D", "SuPreM / Universal Model U-Net (Models Genesis' UNet3D)",
        _fixed_strides(UNET3D_STRIDES), MappingProxyType({"act": "relu", "batch_statistics": True}),
        ("SuPreM", "CLIP-Driven Universal Model"), constraint="three fixed downsamplings by 2"),
    "dodnet-unet3d": NetworkSpec(
        "dodnet-unet3d", f"{_PUBLIC}.dodnet_unet3d.DoDNetUNet3D", "DoDNet unet3D with a static head (jianpengz/DoDNet)",
        _fixed_strides(DODNET_STRIDES), MappingProxyType({"layers": list(DODNET_LAYERS), "weight_std": True}),
        ("DoDNet",), constraint="four fixed downsamplings by 2"),
    "swinunetr": NetworkSpec(
        "swinunetr", f"{_PUBLIC}.monai_networks.SwinUNETR", "MONAI Swin UNETR v1, feature size 48",
        _fixed_strides(SWIN_STRIDES), MappingProxyType({"feature_size": 48, "use_v2": False}),
        ("SuPreM", "CLIP-Driven Universal Model"), min_patch=64, extra="monai",
        constraint="patch embedding by 2 and four patch mergings (multiples of 32); at least 64 per axis so that "
                   "the bottleneck's instance norm sees more than one voxel"),
    "swinunetr-v2": NetworkSpec(
        "swinunetr-v2", f"{_PUBLIC}.monai_networks.SwinUNETR", "MONAI Swin UNETR v2, feature size 48",
        _fixed_strides(SWIN_STRIDES), MappingProxyType({"feature_size": 48, "use_v2": True}),
        ("VoCo",), min_patch=64, extra="monai",
        constraint="patch embedding by 2 and four patch mergings (multiples of 32); at least 64 per axis so that "
                   "the bottleneck's instance norm sees more than one voxel"),
    "segresnet": NetworkSpec(
        "segresnet", f"{_PUBLIC}.monai_networks.SegResNet", "MONAI SegResNet, 16 initial filters (SuPreM)",
        _fixed_strides(UNET3D_STRIDES),
        MappingProxyType({"init_filters": 16, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]}),
        ("SuPreM",), extra="monai", constraint="three fixed downsamplings by 2"),
    "primus-m": NetworkSpec(
        "primus-m", "nnunet_transfer.architectures.primus_m.PrimusMNetwork",
        "Primus-M (dynamic-network-architectures; nnssl/OpenMind)", _fixed_strides([[1, 1, 1], [8, 8, 8]]),
        MappingProxyType({}), ("nnssl / OpenMind",), patch_as="input_shape",
        constraint="8x8x8 patch embedding: the patch size is a multiple of 8; the positional embedding of a "
                   "checkpoint pretrained on another patch is resized over the token grid"),
}


def architecture_names() -> List[str]:
    """Every name ``plan-arch --arch`` accepts: the encoder registry's and this registry's."""
    from nnunet_transfer.architectures.encoders import ENCODERS

    return list(ENCODERS) + list(NETWORKS)


def fit_patch_size(patch: Sequence[int], divisor: Sequence[int], minimum: int = 1) -> List[int]:
    """``patch`` rounded down to a multiple of ``divisor`` per axis, but at least ``max(divisor, minimum)`` rounded
    up to a multiple of the divisor."""
    out = []
    for p, d in zip(patch, divisor):
        floor = math.ceil(max(d, minimum) / d) * d
        out.append(max(floor, (int(p) // d) * d))
    return out


def network_configuration(configuration: Mapping[str, Any], name: str,
                          configuration_name: str = "3d_fullres") -> Tuple[dict, List[str]]:
    """A copy of a resolved nnU-Net plans configuration whose network is the registered ``name``, plus notes.

    Spacing, normalisation, resampling, batch size and ``data_identifier`` stay (nnU-Net's preprocessed data is
    reused); ``architecture`` is replaced and ``patch_size`` fitted to the network. The notes say what the network
    fixes and what changed. Raises ``ValueError`` for a 2D configuration (every registered network is 3D).
    """
    spec = NETWORKS[name]
    patch = [int(p) for p in configuration["patch_size"]]
    if len(patch) != 3:
        raise ValueError(f"configuration {configuration_name!r} is {len(patch)}D (patch size {patch}); {name} is a 3D "
                         "network: use a 3D configuration such as 3d_fullres")
    plans_strides = configuration.get("architecture", {}).get("arch_kwargs", {}).get("strides") or [[1, 1, 1]]
    strides = spec.strides(plans_strides)
    divisor = [math.prod(s[axis] for s in strides) for axis in range(3)]
    new_patch = fit_patch_size(patch, divisor, spec.min_patch)
    new = copy.deepcopy(dict(configuration))
    new["architecture"] = {
        "network_class_name": spec.class_name,
        "arch_kwargs": {**copy.deepcopy(dict(spec.fixed_kwargs)), "strides": strides},
        "_kw_requires_import": [],
    }
    if spec.patch_as:
        new["architecture"]["arch_kwargs"][spec.patch_as] = list(new_patch)
    new["patch_size"] = new_patch
    notes = [f"{name}: {spec.description}; {spec.constraint}",
             f"downsampling {strides[1:]}: the patch size must be a multiple of {divisor}"
             + (f" and at least {spec.min_patch} per axis" if spec.min_patch > 1 else ""),
             f"patch size {patch} -> {new_patch}" if new_patch != patch else f"patch size {patch} kept",
             "deep supervision: " + (f"{len(strides) - 1} outputs" if spec.deep_supervision else
                                     "none (one output; the fine-tuning trainers train without it)")]
    if spec.extra:
        notes.append(f"needs the optional dependency: pip install nnunet-transfer[{spec.extra}]")
    return new, notes
