"""KiTS21 loss of paper 001: nnU-Net's Dice + CE plus a weighted binary CE per Hierarchical Evaluation Class.

KiTS21 scores nested classes (HECs), not the raw labels: "Kidney and Masses" = {kidney, tumor, cyst} = {1, 2, 3}
and "Kidney Mass" = {tumor, cyst} = {2, 3}. The paper adds, for each of these two HECs, a binary cross entropy
that treats the HEC as foreground and everything else as background, weighted 0.1 and 0.3, to nnU-Net's loss.
The network stays a plain softmax network over the labels; the probability of a HEC is the *sum* of the softmax
probabilities of its labels.

Numerics: ``log p_HEC = logsumexp(logits[HEC]) - logsumexp(logits)`` and
``log(1 - p_HEC) = logsumexp(logits[not HEC]) - logsumexp(logits)``, computed in float32 (at least) even under
autocast.
Neither side ever takes the log of a rounded probability, so saturated logits (+-50) and fp16/bf16 autocast give
finite losses and gradients.

:class:`HECDiceCELoss` *is* nnU-Net's ``DC_and_CE_loss`` (a subclass, same ``dc``/``ce`` members, same result when
every HEC weight is 0), so it drops into ``DeepSupervisionWrapper`` and into nnU-Net's ``torch.compile`` of
``loss.dc``. :func:`hec_loss_for_trainer` builds it with the arguments ``nnUNetTrainer._build_loss`` uses.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import Tensor

from nnunet_transfer.losses.wrapping import DICE_CLASS, soft_dice_kwargs
from nnunet_transfer.utils.distributed import global_mean

__all__ = ["KITS21_HEC_WEIGHTS", "HECDiceCELoss", "hec_bce", "hec_loss_for_trainer"]

#: HEC name -> (labels of the HEC, weight of its BCE); KiTS21 labels: 1 kidney, 2 tumor, 3 cyst (paper 001)
KITS21_HEC_WEIGHTS: Mapping[str, tuple[tuple[int, ...], float]] = {
    "kidney_and_mass": ((1, 2, 3), 0.1),
    "mass": ((2, 3), 0.3),
}


def _check_labels(labels: Sequence[int], num_classes: int, what: str = "HEC") -> tuple[int, ...]:
    """Validate a HEC's labels against the number of network outputs; return them as a sorted tuple."""
    labels = tuple(sorted({int(lab) for lab in labels}))
    if not labels:
        raise ValueError(f"{what} has no labels; give at least one label value")
    bad = [lab for lab in labels if not 0 <= lab < num_classes]
    if bad:
        raise ValueError(
            f"{what} labels {bad} do not exist: the network has {num_classes} output channels (labels 0.."
            f"{num_classes - 1}); fix the HEC definition or the dataset.json labels"
        )
    if len(labels) == num_classes:
        raise ValueError(
            f"{what} contains every label {labels}: its probability is always 1 and its BCE is undefined; "
            f"leave at least one label outside the HEC"
        )
    return labels


def hec_bce(logits: Tensor, target: Tensor, labels: Sequence[int], ignore_label: Optional[int] = None) -> Tensor:
    """Binary cross entropy of one Hierarchical Evaluation Class, averaged over the (non-ignored) voxels.

    ``logits``: (B, C, *spatial) raw network outputs of a softmax network. ``target``: integer label map,
    (B, 1, *spatial) as nnU-Net passes it, or (B, *spatial). ``labels``: the label values forming the HEC; its
    probability is the sum of their softmax probabilities. Voxels whose target equals ``ignore_label`` count
    neither as foreground nor background. When every voxel is ignored the result is a zero that keeps the graph.
    Under DDP the mean is over the (non-ignored) voxels of all ranks
    (:func:`~nnunet_transfer.utils.distributed.global_mean`): ranks with different numbers of ignored voxels train as
    one process on the whole batch.
    The result is float32 for half/bfloat16/float32 logits (float64 for float64 ones), whatever the autocast dtype.
    """
    num_classes = logits.shape[1]
    labels = _check_labels(labels, num_classes)
    if target.ndim == logits.ndim:
        if target.shape[1] != 1:
            raise ValueError(
                f"hec_bce needs an integer label map, got a target of shape {tuple(target.shape)} with "
                f"{target.shape[1]} channels (one-hot/region targets are not supported)"
            )
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    inside = torch.as_tensor(labels, device=logits.device)
    outside = torch.as_tensor([c for c in range(num_classes) if c not in labels], device=logits.device)

    x = logits if logits.dtype == torch.float64 else logits.float()
    lse_all = torch.logsumexp(x, dim=1)
    log_p = torch.logsumexp(x.index_select(1, inside), dim=1) - lse_all
    log_not_p = torch.logsumexp(x.index_select(1, outside), dim=1) - lse_all
    target = target.long()
    is_fg = torch.isin(target, inside)
    per_voxel = -torch.where(is_fg, log_p, log_not_p)
    if ignore_label is None:
        return global_mean(per_voxel.sum(), per_voxel.numel())
    keep = target != int(ignore_label)
    return global_mean(torch.where(keep, per_voxel, 0.0).sum(), keep.sum())


def _check_hec_weights(hec_weights: Mapping[str, tuple[Sequence[int], float]]) -> tuple:
    """Normalise ``{name: (labels, weight)}`` to a tuple of (name, labels, weight), validating the weights."""
    out = []
    for name, entry in hec_weights.items():
        try:
            labels, weight = entry
        except (TypeError, ValueError):
            raise ValueError(f"HEC {name!r}: expected (labels, weight), got {entry!r}") from None
        labels = tuple(int(lab) for lab in labels)
        weight = float(weight)
        if not labels:
            raise ValueError(f"HEC {name!r} has no labels")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"HEC {name!r}: weight must be a finite number >= 0, got {weight}")
        out.append((str(name), labels, weight))
    return tuple(out)


class HECDiceCELoss(DC_and_CE_loss):
    """nnU-Net's ``DC_and_CE_loss`` plus ``sum_h weight_h * hec_bce(h)`` over the HECs in ``hec_weights``.

    Arguments as ``DC_and_CE_loss`` (the dicts are copied, not modified); ``hec_weights`` maps a HEC name to
    ``(labels, weight)``, default the paper's KiTS21 setting. The HEC terms are added unscaled by ``weight_ce``
    (the paper adds them to the CE with their own weights). ``forward(net_output, target)`` takes one
    scale, as ``DeepSupervisionWrapper`` calls it; ``target`` is nnU-Net's (B, 1, *spatial) label map.
    """

    def __init__(self, soft_dice_kwargs: dict, ce_kwargs: dict,
                 hec_weights: Mapping[str, tuple[tuple[int, ...], float]] = KITS21_HEC_WEIGHTS,
                 weight_ce: float = 1, weight_dice: float = 1, ignore_label: Optional[int] = None,
                 dice_class: type = MemoryEfficientSoftDiceLoss):
        super().__init__(dict(soft_dice_kwargs), dict(ce_kwargs), weight_ce=weight_ce, weight_dice=weight_dice,
                         ignore_label=ignore_label, dice_class=dice_class)
        self.hec_terms = _check_hec_weights(hec_weights)
        if ignore_label is not None:
            clash = [name for name, labels, _ in self.hec_terms if int(ignore_label) in labels]
            if clash:
                raise ValueError(f"HECs {clash} contain the ignore label {ignore_label}; remove it from their labels")

    def hec_losses(self, net_output: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Unweighted BCE of every HEC (for logging)."""
        return {name: hec_bce(net_output, target, labels, self.ignore_label) for name, labels, _ in self.hec_terms}

    def forward(self, net_output: Tensor, target: Tensor) -> Tensor:
        result = super().forward(net_output, target)
        for _, labels, weight in self.hec_terms:
            if weight != 0:
                result = result + weight * hec_bce(net_output, target, labels, self.ignore_label)
        return result

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={labels}x{weight}" for name, labels, weight in self.hec_terms)


def hec_loss_for_trainer(trainer, hec_weights: Mapping[str, tuple[tuple[int, ...], float]] = KITS21_HEC_WEIGHTS
                         ) -> HECDiceCELoss:
    """The HEC loss configured as ``nnUNetTrainer._build_loss`` configures ``DC_and_CE_loss`` for ``trainer``.

    Use it inside a trainer's ``_build_loss`` with :func:`nnunet_transfer.losses.wrapping.with_base_loss` to keep
    nnU-Net's deep-supervision wrapper and weights.

    Raises for region-based datasets (sigmoid outputs; HECs would be regions there) and for HEC labels that the
    dataset does not have.
    """
    label_manager = trainer.label_manager
    if label_manager.has_regions:
        raise ValueError(
            f"{type(trainer).__name__}: the HEC loss needs plain integer labels (softmax outputs), but the "
            f"dataset.json defines regions; drop the HEC loss or use plain labels 0 background, 1 kidney, 2 tumor, "
            f"3 cyst"
        )
    known = set(label_manager.all_labels)
    for name, labels, _ in _check_hec_weights(hec_weights):
        missing = sorted(set(labels) - known)
        if missing:
            raise ValueError(
                f"HEC {name!r} uses labels {missing} that dataset.json does not define (labels: {sorted(known)}); "
                f"fix the HEC weights or the dataset's labels"
            )
    loss = HECDiceCELoss(soft_dice_kwargs(trainer), {}, hec_weights=hec_weights, weight_ce=1, weight_dice=1,
                         ignore_label=label_manager.ignore_label, dice_class=DICE_CLASS)
    if trainer._do_i_compile():
        loss.dc = torch.compile(loss.dc)
    return loss
