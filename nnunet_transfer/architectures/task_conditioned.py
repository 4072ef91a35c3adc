"""Task-conditioned region outputs shared by the multi-task pretraining networks (DoDNet head, Med3D branches).

A network pretrained on the partially labelled MOTS datasets produces per task ``K`` head outputs (organ, tumor)
and returns them as nnU-Net regions, one logit channel per labelled (task, organ|tumor) pair, in the channel order
the dataset's ``regions_class_order`` expects (:mod:`nnunet_transfer.data.mots_tasks`):

* ``task_ids`` unset (inference, ``nnUNetv2_predict``): every task is evaluated in one pass, so stock nnU-Net
  inference produces a full multi-organ prediction;
* ``task_ids`` set (training, :meth:`TaskConditionedNetwork.conditioned_on`): only each sample's own task is
  evaluated; channels of other tasks are filled with :data:`NOT_EVALUATED_LOGIT` (probability 0), which the
  partial-label loss never looks at.

:class:`TaskConditionedNetwork` holds that state and the mapping; subclasses compute the (N, T, K, *spatial)
head outputs for the (N, T) task matrix that :meth:`~TaskConditionedNetwork.batch_tasks` gives.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["NOT_EVALUATED_LOGIT", "TaskConditionedNetwork"]

#: logit written into channels of tasks that were not evaluated: sigmoid == 0 in float32 and float16, and small
#: enough in magnitude that nnU-Net's float16 sliding-window sum stays finite (its Gaussian weights, peak 10, sum
#: to a few tens at most over overlapping tiles: a few thousand << 65504; -1e4 overflowed to -inf), so a
#: task-conditioned prediction can go through nnU-Net's predictor
NOT_EVALUATED_LOGIT = -100.0


class TaskConditionedNetwork(nn.Module):
    """Base of networks whose outputs are per-task heads mapped onto nnU-Net region channels.

    ``head_channel_index[c]`` says which flattened (task, head output) pair feeds output channel ``c``.
    """

    def __init__(self, num_tasks: int, head_channel_index: Sequence[int], head_out_channels: int):
        super().__init__()
        self.num_tasks = num_tasks
        index = torch.as_tensor(list(head_channel_index), dtype=torch.long)
        if int(index.max()) >= num_tasks * head_out_channels:
            raise ValueError("head_channel_index refers to a head output that does not exist")
        self.register_buffer("head_channel_index", index, persistent=False)
        # per-channel owning task, derived from the index (channel -> task = index // outputs per task)
        self.register_buffer("channel_task", index // head_out_channels, persistent=False)
        #: (N,) task of each sample while conditioned (see :meth:`conditioned_on`); None = evaluate all tasks
        self.task_ids: Optional[torch.Tensor] = None

    @property
    def num_output_channels(self) -> int:
        return int(self.head_channel_index.numel())

    @contextmanager
    def conditioned_on(self, task_ids: Optional[torch.Tensor]) -> Iterator[None]:
        """Evaluate only the given task per sample inside the block (training); all tasks outside it."""
        previous = self.task_ids
        self.task_ids = task_ids
        try:
            yield
        finally:
            self.task_ids = previous

    def batch_tasks(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The (N, T) task matrix to evaluate for input ``x``, and each sample's own task (N,) when conditioned
        (None: all tasks, T = num_tasks)."""
        n = x.shape[0]
        if self.task_ids is None:
            return torch.arange(self.num_tasks, device=x.device).expand(n, -1), None
        task_ids = self.task_ids
        if tuple(task_ids.shape) == (1,) and n > 1:  # one case's tiles predicted in a batch
            task_ids = task_ids.expand(n)
        if tuple(task_ids.shape) != (n,):
            raise ValueError(f"task_ids must have shape ({n},), got {tuple(task_ids.shape)}")
        tasks = task_ids.to(x.device)[:, None]
        return tasks, tasks[:, 0]

    def _to_output_channels(self, head_out: torch.Tensor, task_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, T, K, *spatial) head outputs -> (N, output channels, *spatial) in nnU-Net region order.

        ``task_ids`` (N,): one task per sample (T = 1), whose K outputs go to its own channels; every other
        channel is "not evaluated" (:data:`NOT_EVALUATED_LOGIT`). None: all tasks (T = num_tasks).
        """
        n, t, k, *spatial = head_out.shape
        flat = head_out.reshape(n, t * k, *spatial)
        if task_ids is None:
            return flat.index_select(1, self.head_channel_index)
        own = self.channel_task[None, :] == task_ids.to(flat.device)[:, None]  # (N, C)
        own = own.reshape(n, -1, *([1] * len(spatial)))
        per_channel = flat.index_select(1, self.head_channel_index % k)  # (N, C, *spatial)
        return torch.where(own, per_channel, torch.full_like(per_channel, NOT_EVALUATED_LOGIT))
