"""A state dict in the layout of mateuszbuda/brain-segmentation-pytorch's ``unet.pt`` (the hub release), with random
values: what ``torch.save(UNet().state_dict())`` of that repository's ``unet.py`` writes. Written from the
repository's definition (block names, BatchNorm buffers, ConvTranspose2d up-sampling, 1x1 output), independently of
our network, so the tests check our network against the release's keys rather than against itself."""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Tuple

import torch

#: (block module, name prefix inside it, in channels as multiples of init_features or 'in', out multiple)
_BLOCKS = [("encoder1", "enc1", "in", 1), ("encoder2", "enc2", 1, 2), ("encoder3", "enc3", 2, 4),
           ("encoder4", "enc4", 4, 8), ("bottleneck", "bottleneck", 8, 16), ("decoder4", "dec4", 16, 8),
           ("decoder3", "dec3", 8, 4), ("decoder2", "dec2", 4, 2), ("decoder1", "dec1", 2, 1)]


def release_shapes(in_channels: int = 3, out_channels: int = 1, features: int = 32) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of the release's state dict, in its order."""
    shapes: Dict[str, Tuple[int, ...]] = OrderedDict()

    def block(module: str, prefix: str, cin: int, cout: int) -> None:
        for i, c in ((1, cin), (2, cout)):
            shapes[f"{module}.{prefix}conv{i}.weight"] = (cout, c, 3, 3)
            for buffer in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{module}.{prefix}norm{i}.{buffer}"] = (cout,)
            shapes[f"{module}.{prefix}norm{i}.num_batches_tracked"] = ()

    for module, prefix, cin, cout in _BLOCKS[:5]:
        block(module, prefix, in_channels if cin == "in" else cin * features, cout * features)
    for (module, prefix, _, cout), level in zip(_BLOCKS[5:], (4, 3, 2, 1)):
        shapes[f"upconv{level}.weight"] = (2 * cout * features, cout * features, 2, 2)
        shapes[f"upconv{level}.bias"] = (cout * features,)
    for module, prefix, _, cout in _BLOCKS[5:]:
        block(module, prefix, 2 * cout * features, cout * features)
    shapes["conv.weight"] = (out_channels, features, 1, 1)
    shapes["conv.bias"] = (out_channels,)
    return shapes


def release_state_dict(seed: int = 0, **kwargs) -> "OrderedDict[str, torch.Tensor]":
    """Random tensors in the release's layout (``num_batches_tracked`` as int64, as torch saves it)."""
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict((k, torch.tensor(7) if not shape else torch.randn(shape, generator=gen))
                       for k, shape in release_shapes(**kwargs).items())
