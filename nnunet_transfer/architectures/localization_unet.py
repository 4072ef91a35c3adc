"""The localisation-pretraining paper's U-Net (Hu et al., "Deep feature transfer between localization and segmentation
tasks"), 2D or 3D, as a network nnU-Net builds from its plans.

The paper: "3x3 convolutions, 2x2 max-pooling, batch-normalization, and ReLU activations throughout the network. We
also utilize dropout", on "the widely used U-net [Ronneberger et al.]"; its figure with depth and widths is not in
the text. Depth and widths are therefore those of that U-Net: five resolution levels (four 2x2 max-poolings), 64,
128, 256, 512, 1024 features, two convolutions per level in encoder and decoder, 2x2 transposed convolutions up,
skips concatenated, dropout at the end of the contracting path (p = 0.5, as in Ronneberger's U-Net), a 1x1
convolution to the classes.

Built from dynamic-network-architectures' parts, so the state dict follows nnU-Net's conventions:
``PlainConvEncoder(pool="max")`` (each stage after the first is ``[MaxPool, StackedConvBlocks]``) + ``UNetDecoder``.
:class:`~nnunet_transfer.architectures.localizer.LocalizerNetwork` takes this encoder from the plans like any other,
so ``LocalizationPretrainTrainer`` (phase 1) and ``FrozenEncoderTrainer`` (phase 2) train the paper's encoder once
the plans name this network: ``nnunet-transfer plan-arch -d ID -a localization-paper -c 2d``
(:func:`localization_paper_configuration`).
"""

from __future__ import annotations

import copy
from typing import Any, List, Optional, Sequence, Type, Union

import torch
from dynamic_network_architectures.building_blocks.helper import (convert_conv_op_to_dim, convert_dim_to_conv_op,
                                                                   get_matching_batchnorm, get_matching_dropout)
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_transfer.architectures.transfer_keys import network_keys

__all__ = ["LocalizationPaperUNet", "localization_paper_encoder", "localization_paper_configuration",
           "LOCALIZATION_PAPER_CLASS_NAME", "PAPER_FEATURES", "describe_encoder"]

LOCALIZATION_PAPER_CLASS_NAME = "nnunet_transfer.architectures.localization_unet.LocalizationPaperUNet"
#: Ronneberger's U-Net widths, one per resolution level
PAPER_FEATURES = (64, 128, 256, 512, 1024)
PAPER_BOTTLENECK_DROPOUT = 0.5


def localization_paper_encoder(input_channels: int, n_stages: int, features_per_stage: Sequence[int],
                               conv_op: Type[_ConvNd], kernel_sizes, strides, n_conv_per_stage, conv_bias: bool = True,
                               norm_op: Optional[Type[nn.Module]] = None, norm_op_kwargs: Optional[dict] = None,
                               nonlin: Optional[Type[nn.Module]] = None, nonlin_kwargs: Optional[dict] = None,
                               bottleneck_dropout: float = PAPER_BOTTLENECK_DROPOUT, **_: Any) -> PlainConvEncoder:
    """nnU-Net's PlainConvEncoder downsampling by max-pooling, with dropout after its last (deepest) stage."""
    encoder = PlainConvEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                               n_conv_per_stage, conv_bias, norm_op, norm_op_kwargs, None, None, nonlin, nonlin_kwargs,
                               return_skips=True, pool="max")
    if bottleneck_dropout:
        encoder.stages[-1].append(get_matching_dropout(dimension=convert_conv_op_to_dim(conv_op))(p=bottleneck_dropout))
    return encoder


class LocalizationPaperUNet(nn.Module):
    """U-Net of the localisation paper (see the module docstring); plans-style arguments."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: Union[int, Sequence[int]],
                 conv_op: Type[_ConvNd], kernel_sizes, strides, n_conv_per_stage, num_classes: int,
                 n_conv_per_stage_decoder, conv_bias: bool = True, norm_op: Optional[Type[nn.Module]] = None,
                 norm_op_kwargs: Optional[dict] = None, dropout_op=None, dropout_op_kwargs=None,
                 nonlin: Optional[Type[nn.Module]] = None, nonlin_kwargs: Optional[dict] = None,
                 deep_supervision: bool = False, bottleneck_dropout: float = PAPER_BOTTLENECK_DROPOUT):
        super().__init__()
        if dropout_op is not None:
            raise ValueError("LocalizationPaperUNet places its dropout itself (bottleneck_dropout); dropout_op must "
                             "be None")
        if isinstance(n_conv_per_stage_decoder, int):
            n_conv_per_stage_decoder = [n_conv_per_stage_decoder] * (n_stages - 1)
        self.encoder = localization_paper_encoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes,
                                                  strides, n_conv_per_stage, conv_bias, norm_op, norm_op_kwargs,
                                                  nonlin, nonlin_kwargs, bottleneck_dropout)
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision)
        self.key_to_encoder, self.key_to_stem, self.keys_to_in_proj = network_keys(self.encoder)

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        InitWeights_He(0.0)(module)  # ReLU


def localization_paper_configuration(configuration: dict, configuration_name: str = "2d") -> dict:
    """A copy of a resolved nnU-Net plans configuration whose architecture is :class:`LocalizationPaperUNet`.

    Spacing, normalisation, batch size and data identifier stay; the patch size is rounded down to a multiple of 16
    per axis (four 2x2 poolings). Raises ``ValueError`` when an axis of the patch is below 16.
    """
    patch = [int(p) for p in configuration["patch_size"]]
    n_pool = len(PAPER_FEATURES) - 1
    divisor = 2 ** n_pool
    if min(patch) < divisor:
        raise ValueError(f"configuration {configuration_name!r} has patch size {patch}; the localisation paper's "
                         f"U-Net pools {n_pool} times and needs at least {divisor} voxels per axis")
    dim = len(patch)
    conv_op = convert_dim_to_conv_op(dim)
    norm_op = get_matching_batchnorm(conv_op)
    new = copy.deepcopy(configuration)
    new["patch_size"] = [p // divisor * divisor for p in patch]
    n = len(PAPER_FEATURES)
    new["architecture"] = {
        "network_class_name": LOCALIZATION_PAPER_CLASS_NAME,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(PAPER_FEATURES),
            "conv_op": f"{conv_op.__module__}.{conv_op.__name__}",
            "kernel_sizes": [[3] * dim] * n,
            "strides": [[1] * dim] + [[2] * dim] * (n - 1),
            "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1),
            "conv_bias": True,
            "norm_op": f"{norm_op.__module__}.{norm_op.__name__}",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.ReLU",
            "nonlin_kwargs": {"inplace": True},
            "bottleneck_dropout": PAPER_BOTTLENECK_DROPOUT,
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    return new


def describe_encoder(network: nn.Module, plans_class_name: str) -> str:
    """One line saying which encoder a network holds: class, widths, downsampling, normalisation, where from."""
    encoder = getattr(network, "encoder", network)
    channels: List[int] = [int(c) for c in getattr(encoder, "output_channels", [])]
    pools = sorted({type(m).__name__ for m in encoder.modules() if isinstance(m, nn.modules.pooling._MaxPoolNd)})
    norms = sorted({type(m).__name__ for m in encoder.modules()
                    if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm))})
    down = f"max-pooling ({', '.join(pools)})" if pools else "strided convolutions"
    paper = " = the localisation paper's U-Net encoder" if plans_class_name == LOCALIZATION_PAPER_CLASS_NAME else \
        " (not the paper's encoder: plan it with `nnunet-transfer plan-arch -a localization-paper`)"
    return (f"encoder {type(encoder).__name__} of {plans_class_name}{paper}: features {channels}, downsampling by "
            f"{down}, norm {', '.join(norms) or 'none'}")
