"""MLEAM's multi-level edge loss (paper mleam-prostate-edge-attention) and the trainer's loss that adds it to nnU-Net's.

``edge loss = sum_i w_i * MSE(sigmoid(edge_i), wavelet edge map of the target at edge level i)`` over the network's
edge levels (:class:`~nnunet_transfer.architectures.mleam.MLEAMUNet` leaves their logits on ``last_edge_logits``,
highest resolution first). The paper's weights :data:`MLEAM_EDGE_WEIGHTS` are given coarsest level first;
:func:`edge_level_weights` is the one place that maps them onto the levels. :class:`MLEAMLoss` is nnU-Net's
segmentation loss plus this edge loss, as :class:`~nnunet_transfer.trainers.mleam.MLEAMTrainer` trains it.

Where the edge targets belong: here, not in the network. The network only predicts edge logits and gates its features
with them; the edge maps of the label (:mod:`nnunet_transfer.losses.edge_targets`) are needed by the loss alone, so
``MLEAMUNet.forward`` never computes them, prediction (which has no label) does not depend on them, and
``architectures/`` imports nothing from ``losses/``.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_transfer.losses.edge_targets import edge_targets_for_deep_supervision
from nnunet_transfer.utils.distributed import global_mean

__all__ = ["MLEAM_EDGE_WEIGHTS", "edge_level_weights", "edge_level_mse", "mleam_edge_loss", "MLEAMLoss"]

#: the paper's edge-loss weights w^1, w^2, w^3, in decoder computation order: coarsest of the three edge levels
#: first, the final (highest-resolution) level last
MLEAM_EDGE_WEIGHTS: tuple[float, ...] = (0.5, 0.8, 1.0)

#: nnU-Net's target: the deep-supervision list (highest resolution first) or one full-resolution tensor
SegTargets = Union[Sequence[torch.Tensor], torch.Tensor]


def edge_level_weights(n_levels: int, weights: Sequence[float] = MLEAM_EDGE_WEIGHTS) -> List[float]:
    """Weights of ``n_levels`` edge maps, highest resolution first, from ``weights`` in the paper's order (coarsest
    first): the highest-resolution map gets ``weights[-1]``; with fewer levels than weights the last ones are used."""
    if n_levels < 1:
        raise ValueError(f"edge_level_weights: n_levels must be >= 1, got {n_levels}")
    if n_levels > len(weights):
        raise ValueError(f"{n_levels} edge levels but only {len(weights)} edge weights {tuple(weights)}; set one "
                         "weight per level")
    return list(weights)[-n_levels:][::-1]


def edge_level_mse(edge_logits: Sequence[torch.Tensor], seg_targets: SegTargets,
                   ignore_label: Optional[int] = None) -> List[torch.Tensor]:
    """Unweighted ``MSE(sigmoid(edge_i), gt_edge_i)`` of every edge level, highest resolution first.

    ``edge_logits``: the network's ``last_edge_logits``. ``seg_targets``: nnU-Net's deep-supervision target list
    (highest resolution first; label maps (B, 1, ...) or region maps (B, R, ...)); target ``i`` must have the size of
    ``edge_logits[i]``. A single full-resolution target tensor (deep supervision off) is resampled to each edge level
    by nearest neighbour (nnU-Net's ``nearest-exact``). ``ignore_label``: see
    :func:`~nnunet_transfer.losses.edge_targets.edge_targets_for_deep_supervision`. Under DDP each value is this
    rank's share of the MSE over the global batch (:func:`~nnunet_transfer.utils.distributed.global_mean`; equal to
    its own MSE when the ranks hold equal batches).
    """
    edge_logits = list(edge_logits)
    n = len(edge_logits)
    if n == 0:
        raise ValueError("mleam_edge_loss: no edge logits; run a forward pass of MLEAMUNet first.")
    if isinstance(seg_targets, torch.Tensor):
        seg_targets = [seg_targets if tuple(seg_targets.shape[2:]) == tuple(e.shape[2:]) else
                       F.interpolate(seg_targets.float(), size=e.shape[2:], mode="nearest-exact").to(seg_targets.dtype)
                       for e in edge_logits]
    if len(seg_targets) < n:
        raise ValueError(
            f"mleam_edge_loss: {n} edge levels but only {len(seg_targets)} deep-supervision targets; enable deep "
            "supervision or pass the full-resolution target tensor."
        )
    for i, (e, t) in enumerate(zip(edge_logits, seg_targets)):
        if tuple(e.shape[2:]) != tuple(t.shape[2:]) or e.shape[0] != t.shape[0]:
            raise ValueError(
                f"mleam_edge_loss: edge level {i} has shape {tuple(e.shape)} but target {i} has {tuple(t.shape)}; "
                "the deep-supervision scales must match MLEAMUNet.deep_supervision_scales()."
            )
    targets = edge_targets_for_deep_supervision(list(seg_targets[:n]), ignore_label=ignore_label)
    # the mean over the voxels of all DDP ranks (the plain MSE on one process)
    squared = [(torch.sigmoid(e.float()) - t) ** 2 for e, t in zip(edge_logits, targets)]
    return [global_mean(s.sum(), s.numel()) for s in squared]


def _weighted_sum(level_mse: Sequence[torch.Tensor], level_weights: Sequence[float]) -> torch.Tensor:
    """``sum_i w_i * mse_i`` in float32, both highest resolution first (weights from :func:`edge_level_weights`)."""
    loss = level_mse[0].new_zeros((), dtype=torch.float32)
    for w, m in zip(level_weights, level_mse):
        loss = loss + w * m
    return loss


def mleam_edge_loss(edge_logits: Sequence[torch.Tensor], seg_targets: SegTargets,
                    weights: Sequence[float] = MLEAM_EDGE_WEIGHTS, ignore_label: Optional[int] = None) -> torch.Tensor:
    """MLEAM edge loss ``sum_i w_i * MSE(sigmoid(edge_i), gt_edge_i)`` (arguments: :func:`edge_level_mse`;
    ``weights`` in the paper's order, see :func:`edge_level_weights`)."""
    edge_logits = list(edge_logits)
    level_weights = edge_level_weights(len(edge_logits), weights) if edge_logits else []
    return _weighted_sum(edge_level_mse(edge_logits, seg_targets, ignore_label), level_weights)


class MLEAMLoss(nn.Module):
    """``seg_loss(output, target) + mleam_edge_loss(edge_logits(), target)``, remembering the edge terms.

    ``seg_loss``: nnU-Net's loss (deep-supervision wrapper included). ``edge_logits``: returns the edge logits of the
    forward pass that produced ``output`` (``MLEAMUNet.last_edge_logits``, highest resolution first); a callable so the
    network is not registered as a submodule of the loss. ``target``: nnU-Net's target list (deep supervision) or
    full-resolution tensor. Every call appends the unweighted MSE of each edge level to :attr:`edge_history`.
    """

    def __init__(self, seg_loss: nn.Module, edge_logits: Callable[[], Sequence[torch.Tensor]],
                 weights: Sequence[float] = MLEAM_EDGE_WEIGHTS, ignore_label: Optional[int] = None):
        super().__init__()
        if not weights or any(w < 0 for w in weights):
            raise ValueError(f"MLEAMLoss: edge weights must be non-negative and not empty, got {tuple(weights)}")
        self.seg_loss = seg_loss
        self._edge_logits = edge_logits
        self.weights = tuple(float(w) for w in weights)
        self.ignore_label = ignore_label
        #: one row per call: unweighted MSE of each edge level, highest resolution first
        self.edge_history: List[List[float]] = []

    def forward(self, output, target) -> torch.Tensor:
        seg = self.seg_loss(output, target)
        edges = list(self._edge_logits())
        if not edges:
            raise RuntimeError("MLEAMLoss: the network left no edge logits; is it an MLEAMUNet (plans made with "
                               "`nnunet-transfer plan-arch ... --decoder mleam`)?")
        if not isinstance(target, torch.Tensor) and len(target) < len(edges):
            raise ValueError(f"MLEAMLoss: {len(edges)} edge levels but only {len(target)} deep-supervision targets; "
                             "the trainer's deep-supervision scales must be the network's "
                             "(MLEAMUNet.deep_supervision_scales())")
        level_weights = edge_level_weights(len(edges), self.weights)
        mse = edge_level_mse(edges, target, self.ignore_label)
        self.edge_history.append([float(m.detach()) for m in mse])
        return seg + _weighted_sum(mse, level_weights)

    def pop_history(self) -> np.ndarray:
        """The rows recorded since the last call, as an array (calls x levels); clears the record."""
        rows, self.edge_history = self.edge_history, []
        return np.asarray(rows, dtype=float)

    def summary(self, rows: np.ndarray) -> str:
        """``0.1234 (weighted sum; per level, highest resolution first: 0.01 / 0.02 / 0.03)``."""
        if rows.size == 0:
            return "no calls"
        means = rows.mean(axis=0)
        total = float(np.dot(edge_level_weights(len(means), self.weights), means))
        return (f"{total:.4f} (weighted sum; MSE per level, highest resolution first: "
                + " / ".join(f"{m:.4f}" for m in means) + ")")
