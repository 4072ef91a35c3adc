"""The encoder registry: every encoder a network of ours can be built on, by name (segmentation_models.pytorch's habit).

An :class:`EncoderSpec` says how to build the encoder, what it exposes (channels and strides of its skips, computed
from the same arguments without building it) and which pretrained formats load into it. :data:`ENCODERS` maps names
to specs, :func:`get_encoder` looks one up (an unknown name raises :class:`UnknownEncoderError` with close matches).
Readers: ``nnunet-transfer plan-arch --arch`` (its choices are the registry's names) and
:class:`~nnunet_transfer.architectures.mleam.MLEAMUNet` (its ``encoder=`` argument).

Entries:

- ``plain``: nnU-Net's own ``PlainConvEncoder``, built from the plans' ``PlainConvUNet`` arguments (``n_stages``,
  ``features_per_stage``, ``conv_op``, ``kernel_sizes``, ``strides``, ``n_conv_per_stage``, ...); its weights come
  from an nnU-Net checkpoint of the plain U-Net;
- ``localization-paper``: the localisation-pretraining paper's encoder (nnU-Net's ``PlainConvEncoder`` with 2x2
  max-pooling, batch norm, ReLU, dropout at its end; :mod:`nnunet_transfer.architectures.localization_unet`), same
  arguments as ``plain``; weights from an nnU-Net checkpoint (``LocalizationPretrainTrainer``'s);
- ``med3d-resnet{10,18,34,50,101,152,200}``: MedicalNet's dilated 3D ResNet
  (:class:`~nnunet_transfer.architectures.med3d.Med3DResNet`), arguments ``shortcut_type`` and ``strides``; weights
  from a released MedicalNet file (:mod:`nnunet_transfer.pretrained.formats.medicalnet`) or an nnU-Net checkpoint.

Every encoder is an ``nn.Module`` whose ``forward(x)`` returns the list of skips (highest resolution first) and that
carries what dynamic-network-architectures' decoders read (``output_channels``, ``strides``, ``conv_op``, ``norm_op``,
``norm_op_kwargs``, ``nonlin``, ``nonlin_kwargs``, ``conv_bias``, optionally ``kernel_sizes``, ``dropout_op``), plus
the weight-transfer keys of that library's convention, relative to the encoder: ``key_to_encoder`` (``""``: the
whole module), ``key_to_stem`` and ``keys_to_in_proj`` (the modules whose weights depend on the input channels).
A network holding an encoder under ``self.encoder`` gets its own keys from
:func:`~nnunet_transfer.architectures.transfer_keys.network_keys`; the transfer reads them to find the input convolution (:mod:`nnunet_transfer.transfer.adapt`) and the encoder
(:mod:`nnunet_transfer.transfer.encoder_export`).

Adding an encoder is one file plus one registry entry:

1. write the encoder module in its own file under ``nnunet_transfer/architectures/`` (the interface above; set
   ``key_to_encoder = ""``, ``key_to_stem`` and ``keys_to_in_proj`` in ``__init__``);
2. add an :class:`EncoderSpec` to :data:`ENCODERS` below: ``name``, ``builder(input_channels, **kwargs)``,
   ``stages(**kwargs) -> EncoderStages``, ``pretrained_formats`` (names from :data:`PRETRAINED_FORMATS`).

``plan-arch --arch NAME --decoder mleam`` and ``MLEAMUNet(encoder=NAME, ...)`` then build it; the registry's tests
build every entry and check that it exposes what its spec claims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

from dynamic_network_architectures.building_blocks.helper import maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from torch import nn

from nnunet_transfer.architectures.med3d import RESNET_LAYOUTS, Bottleneck, Med3DResNet
from nnunet_transfer.errors import NnUNetTransferError, did_you_mean

__all__ = ["EncoderSpec", "EncoderStages", "ENCODERS", "PRETRAINED_FORMATS", "MED3D_FAMILY", "UnknownEncoderError",
           "get_encoder", "resolve_encoder", "med3d_encoder_name"]

#: pretrained formats an encoder can take: a released MedicalNet file, an nnU-Net checkpoint of a network with it
PRETRAINED_FORMATS: Tuple[str, ...] = ("medicalnet", "nnunet-checkpoint")
#: the name plans give the Med3D family (``"encoder": "med3d"`` with Med3DResNet's ``depth``), see resolve_encoder
MED3D_FAMILY = "med3d"
_MED3D_DEFAULT_DEPTH = 50  # Med3DResNet's default


class UnknownEncoderError(NnUNetTransferError, ValueError):
    """No encoder of this name in the registry."""


@dataclass(frozen=True)
class EncoderStages:
    """What an encoder exposes: channels and stride (relative to the previous skip) of each skip, input side first."""

    channels: Tuple[int, ...]
    strides: Tuple[Tuple[int, ...], ...]


@dataclass(frozen=True)
class EncoderSpec:
    """One registered encoder (see the module docstring).

    ``builder(input_channels, **kwargs)`` builds it; ``stages(**kwargs)`` says which channels and strides the built
    encoder exposes, without building it; ``fixed_kwargs`` are arguments the name implies (a ResNet's depth), given
    to both; ``pretrained_formats`` lists the formats of :data:`PRETRAINED_FORMATS` whose weights load into it.
    """

    name: str
    builder: Callable[..., nn.Module]
    stages: Callable[..., EncoderStages]
    pretrained_formats: Tuple[str, ...]
    description: str
    fixed_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        unknown = [f for f in self.pretrained_formats if f not in PRETRAINED_FORMATS]
        if unknown:
            raise ValueError(f"encoder {self.name!r}: unknown pretrained formats {unknown}; known: "
                             f"{list(PRETRAINED_FORMATS)}")

    def _kwargs(self, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
        clash = {k: v for k, v in kwargs.items() if k in self.fixed_kwargs and v != self.fixed_kwargs[k]}
        if clash:
            raise ValueError(f"encoder {self.name!r} has {dict(self.fixed_kwargs)}; it cannot be built with {clash} "
                             "(pick the encoder of that name instead)")
        return {**kwargs, **self.fixed_kwargs}

    def build(self, input_channels: int, **kwargs: Any) -> nn.Module:
        """The encoder for ``input_channels`` input channels (``kwargs``: the encoder's own arguments)."""
        return self.builder(input_channels, **self._kwargs(kwargs))

    def describe(self, **kwargs: Any) -> EncoderStages:
        """Channels and strides of the skips the encoder built with ``kwargs`` exposes."""
        return self.stages(**self._kwargs(kwargs))

    def takes(self, pretrained_format: str) -> bool:
        """True when weights in ``pretrained_format`` load into this encoder."""
        return pretrained_format in self.pretrained_formats


# ------------------------------------------------------------------------------------------- nnU-Net's plain encoder
#: PlainConvUNet arguments the plain encoder cannot do without
_PLAIN_REQUIRED = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage")


def _check_plain_kwargs(kwargs: Mapping[str, Any]) -> None:
    missing = [k for k in _PLAIN_REQUIRED if k not in kwargs]
    if missing:
        raise TypeError(f"the 'plain' encoder is missing PlainConvUNet argument(s) {missing}; pass the plans' "
                        "architecture kwargs (arch_kwargs of the configuration).")


def _build_plain(input_channels: int, **kwargs: Any) -> nn.Module:
    _check_plain_kwargs(kwargs)
    return PlainConvEncoder(input_channels, return_skips=True, **kwargs)


def _plain_stages(**kwargs: Any) -> EncoderStages:
    _check_plain_kwargs(kwargs)
    n, features, strides = kwargs["n_stages"], kwargs["features_per_stage"], kwargs["strides"]
    channels = [int(features)] * n if isinstance(features, int) else [int(f) for f in features]
    strides = [strides] * n if isinstance(strides, int) else list(strides)
    return EncoderStages(tuple(channels), tuple(tuple(maybe_convert_scalar_to_list(kwargs["conv_op"], s))
                                                for s in strides))


def _build_localization_paper(input_channels: int, **kwargs: Any) -> nn.Module:
    from nnunet_transfer.architectures.localization_unet import localization_paper_encoder  # imports this module

    _check_plain_kwargs(kwargs)
    return localization_paper_encoder(input_channels, **kwargs)


# ---------------------------------------------------------------------------------------------- MedicalNet ResNets
def med3d_encoder_name(depth: int) -> str:
    """Registry name of the Med3D ResNet of ``depth``, e.g. ``med3d-resnet50``."""
    return f"med3d-resnet{int(depth)}"


def _build_med3d(input_channels: int, **kwargs: Any) -> nn.Module:
    return Med3DResNet(in_channels=input_channels, return_skips=True, **kwargs)


def _med3d_stages(depth: int, strides: Sequence[Any] = (2, 2, 2), **_: Any) -> EncoderStages:
    block, _layers = RESNET_LAYOUTS[depth]
    expansion = Bottleneck.expansion if block == "bottleneck" else 1
    per_axis = [tuple([s] * 3) if isinstance(s, int) else tuple(int(v) for v in s) for s in strides]
    return EncoderStages((64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion),
                         (per_axis[0], per_axis[1], per_axis[2], (1, 1, 1), (1, 1, 1)))


ENCODERS: Dict[str, EncoderSpec] = {
    "plain": EncoderSpec("plain", _build_plain, _plain_stages, ("nnunet-checkpoint",),
                         "nnU-Net's PlainConvEncoder from the plans' PlainConvUNet arguments"),
    **{med3d_encoder_name(depth): EncoderSpec(
        med3d_encoder_name(depth), _build_med3d, _med3d_stages, ("medicalnet", "nnunet-checkpoint"),
        f"MedicalNet's dilated 3D ResNet-{depth}", MappingProxyType({"depth": depth}))
       for depth in sorted(RESNET_LAYOUTS)},
    "localization-paper": EncoderSpec("localization-paper", _build_localization_paper, _plain_stages,
                                      ("nnunet-checkpoint",), "the localisation paper's U-Net encoder (3x3 conv, batch "
                                      "norm, ReLU, 2x2 max-pooling, dropout)"),
}


def get_encoder(name: str) -> EncoderSpec:
    """The registered encoder ``name``; :class:`UnknownEncoderError` naming close matches otherwise."""
    try:
        return ENCODERS[name]
    except KeyError:
        raise UnknownEncoderError(f"unknown encoder {name!r}{did_you_mean(str(name), ENCODERS)}; registered "
                                  f"encoders: {', '.join(ENCODERS)}",
                                  fix="pick one of them, or register a new one in "
                                      "nnunet_transfer/architectures/encoders.py") from None


def resolve_encoder(name: str, kwargs: Mapping[str, Any]) -> Tuple[EncoderSpec, Dict[str, Any]]:
    """The spec and the remaining arguments for ``name`` as plans store it.

    Plans written by ``plan-arch`` name the Med3D family and its depth (``"encoder": "med3d", "depth": 50``, the
    arguments of Med3DResNet); that reads as ``med3d-resnet50``. Any registry name is taken as it is.
    """
    kwargs = dict(kwargs)
    if name == MED3D_FAMILY:
        name = med3d_encoder_name(kwargs.pop("depth", _MED3D_DEFAULT_DEPTH))
    return get_encoder(name), kwargs
