"""The weight-transfer key convention of our networks: where a network's encoder, stem and input projection are.

Every network we ship exposes ``key_to_encoder``, ``key_to_stem`` and ``keys_to_in_proj`` (the names
dynamic-network-architectures gives its U-Nets), so the transfer knows which tensors form the encoder and which
convolution takes the input channels, whatever the architecture.
"""

from __future__ import annotations

from typing import Dict, Tuple

from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from torch import nn

#: the attributes that say where a module's encoder, stem and input projection are
KEY_ATTRIBUTES: Tuple[str, ...] = ("key_to_encoder", "key_to_stem", "keys_to_in_proj")

#: dynamic-network-architectures' encoders do not carry the keys themselves (its U-Nets do); these are the U-Nets'
#: keys (PlainConvUNet, ResidualEncoderUNet) relative to their ``encoder``
_DNA_ENCODER_KEYS: Dict[type, Tuple[str, str, Tuple[str, ...]]] = {
    PlainConvEncoder: ("stages", "stages.0", ("stages.0.0.convs.0.all_modules.0", "stages.0.0.convs.0.conv")),
    ResidualEncoder: ("stages", "stem", ("stem.convs.0.conv", "stem.convs.0.all_modules.0")),
}


def encoder_keys(encoder: nn.Module) -> Tuple[str, str, Tuple[str, ...]]:
    """``(key_to_encoder, key_to_stem, keys_to_in_proj)`` of an encoder module, relative to it."""
    if all(hasattr(encoder, a) for a in KEY_ATTRIBUTES):
        return encoder.key_to_encoder, encoder.key_to_stem, tuple(encoder.keys_to_in_proj)
    for cls, keys in _DNA_ENCODER_KEYS.items():
        if isinstance(encoder, cls):
            return keys
    raise TypeError(f"encoder {type(encoder).__name__} does not say where its stem and input convolution are; give "
                    f"it the attributes {', '.join(KEY_ATTRIBUTES)} (relative to itself, see "
                    "nnunet_transfer.architectures.encoders)")


def network_keys(encoder: nn.Module, name: str = "encoder") -> Tuple[str, str, Tuple[str, ...]]:
    """``(key_to_encoder, key_to_stem, keys_to_in_proj)`` of a network that holds ``encoder`` as attribute ``name``."""
    relative_encoder, stem, in_proj = encoder_keys(encoder)

    def under(key: str) -> str:
        return f"{name}.{key}" if key else name

    return under(relative_encoder), under(stem), tuple(under(k) for k in in_proj)
