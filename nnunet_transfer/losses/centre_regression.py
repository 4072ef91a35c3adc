"""Centre regression (localisation pretraining, Hu et al.): the true centre of each patch, the loss and the error.

The target of a patch is the centre of mass of its foreground, computed from nnU-Net's own batch target (the augmented
label map of the patch, or its region masks), so the centre moves with every spatial augmentation. Coordinates are
normalised, ``(index + 0.5) / size`` per axis in the array's axis order (0 and 1 are the patch's outer faces).
Patches without foreground have no centre and are left out of the loss. :func:`centre_errors_mm` turns normalised
centres back into a distance in mm for reporting.

Used by :class:`~nnunet_transfer.trainers.localization.LocalizationPretrainTrainer`; only torch is needed.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from nnunet_transfer.utils.distributed import global_mean

__all__ = ["foreground_mask", "centres_of_mass", "centre_errors_mm", "CentreRegressionLoss", "full_resolution_target"]

#: nnU-Net's target: one tensor, or with deep supervision a list (full resolution first)
Target = Union[torch.Tensor, List[torch.Tensor]]


def foreground_mask(target: torch.Tensor, label: Optional[int] = None, ignore_label: Optional[int] = None,
                    regions: bool = False) -> torch.Tensor:
    """Boolean foreground (B, *spatial) of nnU-Net's batch target.

    ``target`` is the label map (B, 1, *spatial), or with ``regions`` the region masks (B, R, *spatial) followed,
    when the dataset has an ignore label, by nnU-Net's ignore channel. Foreground is ``label > 0`` without the
    ignore label, ``== label`` when one is chosen, or the union of the regions.
    """
    if target.ndim < 4:
        raise ValueError(f"target must be (B, C, *spatial) with 2 or 3 spatial axes, got shape {tuple(target.shape)}")
    if regions:
        if label is not None:
            raise ValueError("a single localisation label cannot be chosen on a region-based dataset: the target "
                             "is the union of the regions")
        channels = target[:, :-1] if ignore_label is not None else target
        return (channels > 0).any(1)
    if target.shape[1] != 1:
        raise ValueError(f"expected a label map with one channel (B, 1, *spatial), got shape {tuple(target.shape)}; "
                         "is deep supervision or region training on?")
    labels = target[:, 0]
    if label is not None:
        return labels == label
    mask = labels > 0
    if ignore_label is not None:
        mask &= labels != ignore_label
    return mask


def centres_of_mass(mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalised centre of mass (B, ndim) of boolean masks (B, *spatial), and which masks are non-empty (B,).

    Coordinate ``(index + 0.5) / size`` per axis, in the array's axis order, so 0 and 1 are the patch's outer
    faces. Empty masks get the patch centre (0.5) and ``valid == False``.
    """
    weights = mask.float()
    spatial = weights.shape[1:]
    total = weights.flatten(1).sum(1)
    centres = []
    for axis, size in enumerate(spatial):
        other = [d + 1 for d in range(len(spatial)) if d != axis]
        marginal = weights.sum(dim=other) if other else weights
        coords = (torch.arange(size, device=mask.device, dtype=torch.float32) + 0.5) / size
        centres.append((marginal * coords).sum(1) / total.clamp_min(1))
    centres = torch.stack(centres, 1)
    valid = total > 0
    return torch.where(valid[:, None], centres, torch.full_like(centres, 0.5)), valid


def centre_errors_mm(predicted: torch.Tensor, true: torch.Tensor, patch_shape: Sequence[int],
                     spacing: Sequence[float]) -> torch.Tensor:
    """Euclidean distance in mm (B,) between normalised centres (B, ndim) in a patch of ``patch_shape`` voxels of
    ``spacing`` mm (both in the array's axis order)."""
    if not (predicted.shape[-1] == true.shape[-1] == len(patch_shape) == len(spacing)):
        raise ValueError(f"centres {tuple(predicted.shape)} / {tuple(true.shape)}, patch {tuple(patch_shape)} and "
                         f"spacing {tuple(spacing)} must have the same number of axes")
    mm_per_unit = torch.as_tensor([n * s for n, s in zip(patch_shape, spacing)], dtype=torch.float32,
                                  device=predicted.device)
    return ((predicted.float() - true.float()) * mm_per_unit).norm(dim=-1)


class CentreRegressionLoss(nn.Module):
    """MSE between predicted and true normalised centres; the true centre comes from the batch's label target.

    Patches without foreground have no centre and are left out; a batch without any gives a zero loss that still
    back-propagates (nnU-Net's train step calls ``backward`` unconditionally). Under DDP the mean is over the patches
    with a centre of all ranks (:func:`~nnunet_transfer.utils.distributed.global_mean`), so ranks holding different
    numbers of such patches train as one process on the whole batch.
    """

    def __init__(self, label: Optional[int] = None, ignore_label: Optional[int] = None, regions: bool = False):
        super().__init__()
        self.label = label
        self.ignore_label = ignore_label
        self.regions = regions

    def targets(self, target: Target) -> Tuple[torch.Tensor, torch.Tensor]:
        """True centres (B, ndim) and validity (B,) of nnU-Net's target (full-resolution entry of a list)."""
        mask = foreground_mask(full_resolution_target(target), self.label, self.ignore_label, self.regions)
        return centres_of_mass(mask)

    def forward(self, prediction: torch.Tensor, target: Target) -> torch.Tensor:
        centres, valid = self.targets(target)
        if prediction.shape != centres.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} does not match the centres "
                             f"{tuple(centres.shape)} of a target of shape "
                             f"{tuple(full_resolution_target(target).shape)}")
        squared = (prediction.float() - centres) ** 2
        # masked sum (not indexing) keeps every prediction in the graph, also on a rank without any centre
        return global_mean((squared * valid[:, None]).sum(), valid.sum() * squared.shape[1])


def full_resolution_target(target: Target) -> torch.Tensor:
    """The full-resolution entry of nnU-Net's target (the tensor itself without deep supervision)."""
    return target[0] if isinstance(target, (list, tuple)) else target
