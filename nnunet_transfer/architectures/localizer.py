"""The plans' U-Net encoder with a fully connected head that regresses the target's centre (localisation pretraining).

Hu et al., "Deep feature transfer between localization and segmentation tasks": the encoding arm of a U-Net is
first trained as a localiser (features -> fully connected layers without output activation -> centre coordinates,
MSE, RMSprop); its weights then initialise the encoder of the segmentation U-Net.

:class:`LocalizerNetwork` keeps the encoder *module* of the architecture named in the nnU-Net plans (built with
nnU-Net's own ``get_network_from_plans``), so its ``encoder.*`` state-dict keys and shapes are exactly those of the
segmentation network's encoder and transfer encoder-only. Everything else lives under ``regressor.*``.

Head design (decided here, the paper gives no sizes):

* the bottleneck features are average-pooled to a small fixed grid (at most 4 cells per axis), not to a single
  vector: global average pooling would make the features translation invariant and throw away the very position
  the head must regress. A small grid keeps the position coarse-grained and the parameter count independent of
  the patch size (320 channels x 4^3 cells -> 256 hidden units is 5.2 M weights);
* flatten -> Linear -> ReLU -> Dropout -> Linear to one number per spatial axis, with *no* output activation
  (the paper's linear output). The last bias starts at 0.5, the patch centre, i.e. at the best constant guess.

Outputs are centre coordinates normalised to the patch, axis order of the input array (z, y, x in 3D; y, x in
2D): coordinate ``(index + 0.5) / size``, so 0 and 1 are the outer faces of the patch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Sequence, Tuple, Union

import numpy as np
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunet_transfer.architectures.transfer_keys import network_keys

if TYPE_CHECKING:  # only a type: the plans handler pulls in nnU-Net's image I/O (the GPU check runs without it)
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

#: largest number of pooled cells per axis in front of the fully connected layers
DEFAULT_MAX_POOL_GRID = 4
DEFAULT_HIDDEN_FEATURES = 256
DEFAULT_DROPOUT = 0.25


def bottleneck_shape(patch_size: Sequence[int], strides: Sequence[Union[int, Sequence[int]]]) -> Tuple[int, ...]:
    """Spatial size of the encoder's last feature map for ``patch_size`` (each stride divides, rounding up)."""
    shape = np.array(patch_size, dtype=int)
    for s in strides:
        shape = -(-shape // np.broadcast_to(np.asarray(s, dtype=int), shape.shape))  # ceil division
    return tuple(int(v) for v in shape)


def pool_grid_for(patch_size: Sequence[int], strides: Sequence[Union[int, Sequence[int]]],
                  max_cells: int = DEFAULT_MAX_POOL_GRID) -> Tuple[int, ...]:
    """Cells per axis of the pooled grid: the bottleneck size, capped at ``max_cells`` (never upsamples)."""
    return tuple(min(int(max_cells), b) for b in bottleneck_shape(patch_size, strides))


class CentreRegressor(nn.Sequential):
    """Pooled features -> coordinates: AdaptiveAvgPool(grid) -> Flatten -> Linear -> ReLU -> Dropout -> Linear."""

    def __init__(self, in_channels: int, pool_grid: Sequence[int], hidden_features: int = DEFAULT_HIDDEN_FEATURES,
                 dropout: float = DEFAULT_DROPOUT):
        ndim = len(pool_grid)
        if ndim not in (2, 3):
            raise ValueError(f"the centre regressor works on 2D or 3D features, got a pool grid of {ndim} axes")
        pool = nn.AdaptiveAvgPool2d(tuple(pool_grid)) if ndim == 2 else nn.AdaptiveAvgPool3d(tuple(pool_grid))
        super().__init__(
            pool,
            nn.Flatten(1),
            nn.Linear(in_channels * int(np.prod(pool_grid)), hidden_features),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_features, ndim),
        )
        self.spatial_dims = ndim
        with torch.no_grad():
            self[-1].bias.fill_(0.5)


class LocalizerNetwork(nn.Module):
    """U-Net encoder + :class:`CentreRegressor`: image patch (B, C, *spatial) -> normalised centre (B, ndim)."""

    def __init__(self, encoder: nn.Module, bottleneck_channels: int, pool_grid: Sequence[int],
                 hidden_features: int = DEFAULT_HIDDEN_FEATURES, dropout: float = DEFAULT_DROPOUT):
        super().__init__()
        self.encoder = encoder
        self.key_to_encoder, self.key_to_stem, self.keys_to_in_proj = network_keys(encoder)
        self.regressor = CentreRegressor(bottleneck_channels, pool_grid, hidden_features, dropout)

    @property
    def spatial_dims(self) -> int:
        return self.regressor.spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"LocalizerNetwork ({self.spatial_dims}D) expects input (B, C, *spatial) with "
                             f"{self.spatial_dims} spatial axes, got shape {tuple(x.shape)}")
        features = self.encoder(x)
        if isinstance(features, (list, tuple)):  # U-Net encoders return all skips; the bottleneck is the last
            features = features[-1]
        return self.regressor(features)

    @classmethod
    def from_plans(cls, configuration_manager: ConfigurationManager, num_input_channels: int,
                   num_output_channels: int = 1, hidden_features: int = DEFAULT_HIDDEN_FEATURES,
                   dropout: float = DEFAULT_DROPOUT, max_pool_grid: int = DEFAULT_MAX_POOL_GRID) -> "LocalizerNetwork":
        """Encoder of the plans' architecture (same construction and initialisation as nnU-Net's) + regressor.

        ``num_output_channels`` only sizes the segmentation layers of the U-Net that is built and then dropped; it
        does not change the encoder.
        """
        unet = get_network_from_plans(
            configuration_manager.network_arch_class_name,
            configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import,
            num_input_channels, num_output_channels, allow_init=True, deep_supervision=False)
        encoder = getattr(unet, "encoder", None)
        missing = [a for a in ("output_channels", "strides") if not hasattr(encoder, a)]
        if encoder is None or missing:
            raise TypeError(
                f"the plans' architecture {configuration_manager.network_arch_class_name} has no `.encoder` with "
                f"`output_channels` and `strides` (missing: {missing or ['encoder']}); LocalizerNetwork needs an "
                "nnU-Net U-Net (dynamic_network_architectures PlainConvUNet / ResidualEncoderUNet or compatible).")
        strides: List = list(encoder.strides)
        grid = pool_grid_for(configuration_manager.patch_size, strides, max_pool_grid)
        return cls(encoder, int(encoder.output_channels[-1]), grid, hidden_features, dropout)
