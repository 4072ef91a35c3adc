"""Primus-M (the transformer of nnssl / OpenMind) as a network nnU-Net builds from its plans.

dynamic-network-architectures' ``Primus`` takes ``num_classes``, ``embed_dim``, depth and heads itself, but no
``deep_supervision`` and needs the patch size (``input_shape``): its positional embedding and rotary embedding are
built for that token grid. :class:`PrimusMNetwork` fixes Primus-M's configuration as nnU-Net's own
``nnUNet_Primus_M_Trainer`` builds it (embedding 864, 16 blocks, 12 heads, 8x8x8 patch embedding, drop path 0.2,
``scale_attn_inner``, layer-scale 0.1) and accepts the arguments nnU-Net passes, so a plans file can name it.

It has one output: fine-tuning trainers train it without deep supervision (``supports_deep_supervision``), and
turning deep supervision on raises. A checkpoint pretrained on another patch size loads with its positional
embedding resized over the token grid (:func:`nnunet_transfer.transfer.adapt.resize_positional_embedding`).
The weight-transfer keys are Primus' own: ``key_to_encoder = "eva"``, ``key_to_stem = "down_projection"``,
``keys_to_in_proj = ("down_projection.proj",)``, ``key_to_lpe = "eva.pos_embed"``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from dynamic_network_architectures.architectures.primus import Primus

__all__ = ["PrimusMNetwork", "PRIMUS_M", "PRIMUS_M_STRIDES", "PRIMUS_M_CLASS_NAME"]

PRIMUS_M_CLASS_NAME = "nnunet_transfer.architectures.primus_m.PrimusMNetwork"
#: Primus-M as nnU-Net's nnUNet_Primus_M_Trainer builds it
PRIMUS_M = {"embed_dim": 864, "patch_embed_size": (8, 8, 8), "eva_depth": 16, "eva_numheads": 12,
            "drop_path_rate": 0.2, "scale_attn_inner": True, "init_values": 0.1}
#: the patch embedding as nnU-Net "strides": the input stage, then one step of 8 per axis
PRIMUS_M_STRIDES = [[1, 1, 1], [8, 8, 8]]


class _NoDeepSupervision:
    """What nnU-Net's ``set_deep_supervision_enabled`` sets (``network.decoder.deep_supervision``): only False."""

    @property
    def deep_supervision(self) -> bool:
        return False

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        if enabled:
            raise ValueError("Primus has one output and no deep supervision; train it with a fine-tuning trainer "
                             "(they turn deep supervision off for it) or a trainer with enable_deep_supervision = "
                             "False")


class PrimusMNetwork(Primus):
    """Primus-M built from nnU-Net's plans (see the module docstring)."""

    supports_deep_supervision = False

    def __init__(self, input_channels: int, num_classes: int, input_shape: Sequence[int],
                 strides: Optional[Sequence[Sequence[int]]] = None, deep_supervision: bool = False,
                 **overrides) -> None:
        settings = {**PRIMUS_M, **overrides}
        if strides is not None:
            embed = [math.prod(s[axis] for s in strides) for axis in range(3)]
            if tuple(embed) != tuple(settings["patch_embed_size"]):
                raise ValueError(f"strides {list(strides)} give a patch embedding of {embed}; Primus-M embeds "
                                 f"{list(settings['patch_embed_size'])} patches")
        input_shape = tuple(int(s) for s in input_shape)
        if any(s % p for s, p in zip(input_shape, settings["patch_embed_size"])):
            raise ValueError(f"the patch size {list(input_shape)} must be a multiple of the patch embedding "
                             f"{list(settings['patch_embed_size'])} per axis")
        super().__init__(input_channels, settings.pop("embed_dim"), tuple(settings.pop("patch_embed_size")),
                         num_classes, eva_depth=settings.pop("eva_depth"), eva_numheads=settings.pop("eva_numheads"),
                         input_shape=input_shape, **settings)
        self.token_grid = tuple(s // p for s, p in zip(input_shape, self.down_projection.proj.kernel_size))
        self._deep_supervision_switch = _NoDeepSupervision()
        self._deep_supervision_switch.deep_supervision = deep_supervision

    @property
    def decoder(self) -> _NoDeepSupervision:
        """Where nnU-Net's trainer switches deep supervision (this network has none)."""
        return self._deep_supervision_switch
