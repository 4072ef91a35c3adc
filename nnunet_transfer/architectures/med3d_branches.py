"""Med3D's pretraining network: one shared encoder and one light segmentation branch per source dataset.

Med3D (Chen et al. 2019) pretrains its 3D ResNet on 8 datasets with "a shared encoder and eight simple decoder
branches", where "each branch consists of a 1x1x1 convolutional kernel and a corresponding up-sampling layer that
scale the network output up to the original dimension"; "each decoder branch only processes the feature map
extracted from the corresponding dataset and the rest branches do not participate in its optimization process".

:class:`Med3DBranchNetwork` is that network on any encoder with the attributes of dynamic-network-architectures'
encoders (``output_channels``, ``conv_op``) that returns its skips as a list: a
:class:`~nnunet_transfer.architectures.med3d.Med3DResNet` (Med3D itself; its state dict is MedicalNet's) or the
encoder of the plans' own U-Net. The branches (:class:`Med3DBranches`, attribute ``decoder``, so nnU-Net's
``set_deep_supervision_enabled`` finds its flag) read the deepest features; the logits are upsampled (linear
interpolation, as the paper's liver experiment) to the input size. Outputs are MOTS regions
(:mod:`.task_conditioned`): while conditioned on the batch's tasks only each sample's own branch runs, so the other
branches get no gradient at all (``grad`` stays None: no momentum or weight decay step either).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_transfer.architectures.transfer_keys import network_keys
from nnunet_transfer.architectures.task_conditioned import TaskConditionedNetwork

__all__ = ["Med3DBranches", "Med3DBranchNetwork"]

_INTERPOLATION_BY_NDIM = {1: "linear", 2: "bilinear", 3: "trilinear"}


class Med3DBranches(nn.Module):
    """One 1x1(x1) convolution per task on the encoder's deepest features: ``branches.<task>``."""

    def __init__(self, in_channels: int, num_tasks: int, outputs_per_task: int, conv_op: type = nn.Conv3d):
        super().__init__()
        self.outputs_per_task = outputs_per_task
        self.branches = nn.ModuleList(conv_op(in_channels, outputs_per_task, kernel_size=1, bias=True)
                                      for _ in range(num_tasks))
        #: nnU-Net's ``set_deep_supervision_enabled`` sets this; Med3D has a single full-resolution output
        self.deep_supervision = False

    def forward(self, features: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """features (N, C, *spatial), tasks (N, T) -> (N, T, K, *spatial); branch ``tasks[n, j]`` on sample n only.

        The branches of tasks absent from the batch run on no sample (an empty batch) and add an exact zero, so every
        parameter takes part in every step with a zero gradient when its task is absent: DDP (which nnU-Net wraps
        without ``find_unused_parameters``) needs a gradient of every parameter on every rank, and one process then
        updates exactly as the ranks do.
        """
        n, t = tasks.shape
        out = features.new_zeros((n, t, self.outputs_per_task, *features.shape[2:]))
        used = set()
        for j in range(t):
            column = tasks[:, j]
            for task in torch.unique(column).tolist():
                rows = (column == task).nonzero(as_tuple=True)[0]
                out[rows, j] = self.branches[task](features[rows])
                used.add(task)
        absent = [branch(features[:0]).sum() for task, branch in enumerate(self.branches) if task not in used]
        return out + torch.stack(absent).sum() if absent else out


class Med3DBranchNetwork(TaskConditionedNetwork):
    """Shared ``encoder`` + per-task 1x1x1 branches (``decoder``) + upsampling to the input size."""

    def __init__(self, encoder: nn.Module, num_tasks: int, head_channel_index: Sequence[int],
                 outputs_per_task: int = 2):
        super().__init__(num_tasks, head_channel_index, outputs_per_task)
        self.encoder = encoder
        self.key_to_encoder, self.key_to_stem, self.keys_to_in_proj = network_keys(encoder)
        self.decoder = Med3DBranches(int(encoder.output_channels[-1]), num_tasks, outputs_per_task,
                                     getattr(encoder, "conv_op", nn.Conv3d))

    def deepest_features(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        return features[-1] if isinstance(features, (list, tuple)) else features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tasks, own_task = self.batch_tasks(x)
        low = self.decoder(self.deepest_features(x), tasks)  # (N, T, K, *low)
        n, t, k, *spatial = low.shape
        up = F.interpolate(low.reshape(n, t * k, *spatial), size=list(x.shape[2:]),
                           mode=_INTERPOLATION_BY_NDIM[len(spatial)], align_corners=False)
        return self._to_output_channels(up.reshape(n, t, k, *x.shape[2:]), own_task)
