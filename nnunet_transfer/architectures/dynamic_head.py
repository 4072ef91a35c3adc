"""DoDNet's task-conditioned dynamic head on top of any nnU-Net encoder/decoder pair.

DoDNet (Zhang et al., CVPR 2021) segments many partially labelled tasks with one network: the bottleneck
features are globally pooled, concatenated with a one-hot task code, and a *controller* turns that vector into
the 162 parameters of a tiny 3-layer 1x1x1 convolutional head (8 -> 8 -> 8 -> 2) that is then applied to
8-channel decoder features. Each sample thus gets its own head.

Here the backbone is whatever nnU-Net's plans describe (``PlainConvUNet``, ``ResidualEncoderUNet`` or one of our
architectures): it is built with ``num_classes = 8`` so that its own segmentation layers (``decoder.seg_layers``)
produce the 8-channel head features at every deep-supervision scale. Keeping the backbone's ``encoder``/``decoder``
attribute names unchanged means a downstream network with the same plans can take these weights with nnU-Net's
``-pretrained_weights`` (only ``.seg_layers.`` and the extra ``controller`` keys differ, and nnU-Net skips/ignores
exactly those).

The whole batch is evaluated in one grouped convolution per head layer (no Python loop over samples): for ``N``
samples and ``T`` tasks per sample the first layer is a convolution with ``groups = N`` producing ``N * T * 8``
channels, the next two use ``groups = N * T``.

Output format = nnU-Net regions (:mod:`.task_conditioned`, shared with the Med3D branches). The network
returns one logit channel per labelled (task, organ|tumor) pair, in
the channel order the dataset's ``regions_class_order`` expects (see :mod:`nnunet_transfer.data.mots_tasks`):

* ``task_ids`` unset (inference, ``nnUNetv2_predict``): every task is evaluated in one pass, so stock nnU-Net
  inference produces a full multi-organ prediction.
* ``task_ids`` set (training): only each sample's own task is evaluated, as in DoDNet; channels of other tasks are
  filled with :data:`NOT_EVALUATED_LOGIT` (probability 0). The partial-label loss never looks at them.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

# NOT_EVALUATED_LOGIT is re-exported: callers of the dynamic head import it from here
from nnunet_transfer.architectures.transfer_keys import network_keys
from nnunet_transfer.architectures.task_conditioned import NOT_EVALUATED_LOGIT, TaskConditionedNetwork  # noqa: F401

#: what the controller's global average pooling reads: the raw bottleneck, or DoDNet's GroupNorm + ReLU of it
CONTROLLER_POOLING = ("raw", "groupnorm_relu")

_CONV_BY_NDIM = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class DynamicHead(nn.Module):
    """A stack of 1x1(x1) convolutions whose weights are given per (sample, task) at call time.

    Holds no parameters itself; it knows the layout of the flat parameter vector the controller produces
    (all weights first, then all biases, as in DoDNet's ``parse_dynamic_params``).
    """

    def __init__(self, in_channels: int = 8, hidden_channels: Sequence[int] = (8, 8), out_channels: int = 2):
        super().__init__()
        self.channels: Tuple[int, ...] = (in_channels, *hidden_channels, out_channels)
        self.weight_numels = [c_in * c_out for c_in, c_out in zip(self.channels[:-1], self.channels[1:])]
        self.bias_numels = list(self.channels[1:])
        self.num_params = sum(self.weight_numels) + sum(self.bias_numels)

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def split_params(self, params: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """(N, T, num_params) -> per layer weights (N, T, c_out, c_in) and biases (N, T, c_out)."""
        if params.shape[-1] != self.num_params:
            raise ValueError(f"dynamic head expects {self.num_params} parameters per task, got {params.shape[-1]}")
        pieces = torch.split(params, self.weight_numels + self.bias_numels, dim=-1)
        n_layers = len(self.weight_numels)
        weights = [w.reshape(*params.shape[:-1], c_out, c_in)
                   for w, c_in, c_out in zip(pieces[:n_layers], self.channels[:-1], self.channels[1:])]
        return weights, list(pieces[n_layers:])

    def forward(self, features: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Apply each sample's T heads to its features.

        features: (N, C_in, *spatial); params: (N, T, num_params) -> (N, T, C_out, *spatial)
        """
        n, c_in, *spatial = features.shape
        t = params.shape[1]
        if c_in != self.channels[0]:
            raise ValueError(f"dynamic head expects {self.channels[0]} feature channels, got {c_in}")
        conv = _CONV_BY_NDIM[len(spatial)]
        kernel_tail = (1,) * len(spatial)
        weights, biases = self.split_params(params.to(features.dtype))

        x = features.reshape(1, n * c_in, *spatial)
        for layer, (w, b) in enumerate(zip(weights, biases)):
            c_out, c_layer_in = w.shape[-2:]
            # layer 0 reads the shared per-sample features (groups = N) and writes T heads at once;
            # later layers run one group per (sample, task)
            groups = n if layer == 0 else n * t
            x = conv(x, w.reshape(n * t * c_out, c_layer_in, *kernel_tail), b.reshape(-1), groups=groups)
            if layer < len(weights) - 1:
                x = F.relu(x)
        return x.reshape(n, t, self.out_channels, *spatial)


class DynamicHeadNetwork(TaskConditionedNetwork):
    """nnU-Net backbone (``encoder`` + ``decoder``) with a task-conditioned dynamic head.

    ``decoder`` must return ``head_in_channels`` feature maps (a tensor, or a list highest resolution first when
    deep supervision is on), i.e. the backbone is built with ``num_classes = head_in_channels``.
    ``head_channel_index[c]`` says which flattened (task, head output) pair feeds output channel ``c``.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, num_tasks: int,
                 head_channel_index: Sequence[int], head_in_channels: int = 8,
                 head_hidden_channels: Sequence[int] = (8, 8), head_out_channels: int = 2,
                 controller_pooling: str = "raw"):
        if controller_pooling not in CONTROLLER_POOLING:
            raise ValueError(f"controller_pooling must be one of {CONTROLLER_POOLING}, got {controller_pooling!r}")
        super().__init__(num_tasks, head_channel_index, head_out_channels)
        self.encoder = encoder
        self.decoder = decoder
        self.key_to_encoder, self.key_to_stem, self.keys_to_in_proj = network_keys(encoder)
        self.head = DynamicHead(head_in_channels, head_hidden_channels, head_out_channels)
        bottleneck_channels = int(encoder.output_channels[-1])
        self.controller = nn.Linear(bottleneck_channels + num_tasks, self.head.num_params)
        #: DoDNet pools GroupNorm(16) + ReLU of the bottleneck ("groupnorm_relu"); "raw" pools the encoder output
        #: itself (our default, kept so existing MOTS checkpoints load: the norm adds parameters ``gap_norm.*``)
        self.controller_pooling = controller_pooling
        if controller_pooling == "groupnorm_relu":
            self.gap_norm = nn.Sequential(nn.GroupNorm(math.gcd(16, bottleneck_channels), bottleneck_channels),
                                          nn.ReLU())

    def task_parameters(self, bottleneck: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Controller: pooled bottleneck + one-hot task -> head parameters, (N, T, num_params)."""
        if self.controller_pooling == "groupnorm_relu":
            bottleneck = self.gap_norm(bottleneck)
        pooled = bottleneck.flatten(2).mean(-1)  # global average pooling, (N, C)
        n, t = tasks.shape
        code = F.one_hot(tasks, self.num_tasks).to(pooled.dtype)  # (N, T, num_tasks)
        return self.controller(torch.cat((pooled[:, None].expand(n, t, -1), code), dim=-1))

    def _head_outputs(self, x: torch.Tensor, tasks: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Backbone + controller + head for the (N, T) task matrix, per deep-supervision scale."""
        skips = self.encoder(x)
        params = self.task_parameters(skips[-1], tasks)
        features = self.decoder(skips)
        if isinstance(features, (list, tuple)):
            return [self.head(f, params) for f in features]
        return self.head(features, params)

    def forward_all_tasks(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Raw head outputs of every task, (N, num_tasks, head_out_channels, *spatial) per scale.

        Includes the outputs no source dataset labels (e.g. the colon *organ*), which DoDNet also computes.
        """
        return self._head_outputs(x, torch.arange(self.num_tasks, device=x.device).expand(x.shape[0], -1))

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        tasks, own_task = self.batch_tasks(x)
        out = self._head_outputs(x, tasks)
        if isinstance(out, list):
            return [self._to_output_channels(o, own_task) for o in out]
        return self._to_output_channels(out, own_task)
