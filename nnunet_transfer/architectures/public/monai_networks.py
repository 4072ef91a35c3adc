"""MONAI's Swin UNETR and SegResNet as nnU-Net networks (optional dependency: ``pip install nnunet-transfer[monai]``).

The classes subclass MONAI's, so the parameter names are MONAI's own (``swinViT.*``, ``encoder1..10``,
``decoder1..5``, ``out``; ``convInit``, ``down_layers``, ``up_layers``, ``up_samples``, ``conv_final``): the names of
the released SuPreM, CLIP-Driven Universal Model and VoCo weights once their wrappers are removed. They take nnU-Net's
constructor arguments and carry its deep-supervision switch (one output each: deep supervision stays off).

- :class:`SwinUNETR`: ``use_v2=True`` is Swin UNETR v2 (a residual convolution block after each Swin stage,
  ``swinViT.layers{i}c``), VoCo's encoder; SuPreM and the Universal Model use v1 with ``feature_size=48``. Input sizes:
  multiples of 32 (patch embedding by 2, four patch mergings).
- :class:`SegResNet`: SuPreM's configuration (``init_filters=16``, ``blocks_down=(1, 2, 2, 4)``,
  ``blocks_up=(1, 1, 1)``). Input sizes: multiples of 8.
"""

from __future__ import annotations

import inspect
from typing import Sequence

from nnunet_transfer.architectures.public.switch import (SWIN_STRIDES, DeepSupervisionSwitch, check_fixed_strides,
                                                          refuse_deep_supervision)
from nnunet_transfer.architectures.public.unet3d import UNET3D_STRIDES

try:
    from monai.networks.nets import SegResNet as _MonaiSegResNet
    from monai.networks.nets import SwinUNETR as _MonaiSwinUNETR
except ImportError as error:  # pragma: no cover - exercised where MONAI is absent
    raise ImportError("Swin UNETR and SegResNet need MONAI: pip install nnunet-transfer[monai]") from error

__all__ = ["SwinUNETR", "SegResNet"]


class SwinUNETR(_MonaiSwinUNETR):
    """MONAI's Swin UNETR with nnU-Net's constructor arguments (see the module docstring)."""

    supports_deep_supervision = False
    keys_to_in_proj = ("swinViT.patch_embed.proj", "encoder1.layer.conv1.conv", "encoder1.layer.conv3.conv")
    head_prefixes = ("out.",)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, feature_size: int = 48,
                 use_v2: bool = False, depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 patch_size: Sequence[int] | None = None, strides: Sequence[Sequence[int]] = SWIN_STRIDES) -> None:
        refuse_deep_supervision("Swin UNETR", deep_supervision)
        check_fixed_strides("Swin UNETR", SWIN_STRIDES, strides)
        kwargs = dict(in_channels=input_channels, out_channels=num_classes, feature_size=feature_size,
                      use_v2=use_v2, depths=tuple(depths), num_heads=tuple(num_heads))
        if "img_size" in inspect.signature(_MonaiSwinUNETR.__init__).parameters:  # MONAI < 1.5 requires it
            kwargs["img_size"] = tuple(patch_size) if patch_size else (96, 96, 96)
        super().__init__(**kwargs)
        self.decoder = DeepSupervisionSwitch(False)


class SegResNet(_MonaiSegResNet):
    """MONAI's SegResNet with nnU-Net's constructor arguments (see the module docstring)."""

    supports_deep_supervision = False
    keys_to_in_proj = ("convInit.conv",)
    head_prefixes = ("conv_final.2.",)

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, init_filters: int = 16,
                 blocks_down: Sequence[int] = (1, 2, 2, 4), blocks_up: Sequence[int] = (1, 1, 1),
                 strides: Sequence[Sequence[int]] = UNET3D_STRIDES) -> None:
        refuse_deep_supervision("SegResNet", deep_supervision)
        if len(blocks_down) != 4:
            raise ValueError(f"SegResNet: blocks_down {list(blocks_down)}; the plans' strides describe four levels")
        check_fixed_strides("SegResNet", UNET3D_STRIDES, strides)
        super().__init__(spatial_dims=3, init_filters=init_filters, in_channels=input_channels,
                         out_channels=num_classes, dropout_prob=0.0, blocks_down=tuple(blocks_down),
                         blocks_up=tuple(blocks_up))
        self.decoder = DeepSupervisionSwitch(False)
