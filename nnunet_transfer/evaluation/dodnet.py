"""DoDNet's MOTS scoring: its post-processing, its Dice and HD95 conventions, and HD95 itself.

DoDNet (``jianpengz/DoDNet``) scores each test case with its own task's two sigmoid channels (organ, tumour),
saved as one label map per case (tumour over organ) and read back by ``a_DynConv/postp.py``, which

* post-processes per task: keep the largest connected component(s) of the organ (liver, pancreas, spleen: 1;
  kidney: 2), keep only tumour inside the organ, then drop tumour components of at most 50 voxels (liver,
  hepatic vessel, pancreas; only when there is more than one component) or keep the largest tumour component
  (kidney, colon, lung); components are 3D with 18-connectivity (``skimage.measure.label(connectivity=2)``);
* computes Dice as ``2 |P & R| / (|P| + |R| + 1)`` (so both empty gives 0, and every case counts);
* computes HD95 with ``medpy.metric.hd95`` at voxel spacing (1, 1, 1) on its resampled data, with 0 when both
  masks are empty and 373.12866 when exactly one is.

Our own convention (``evaluate mots`` by default, the trainer's ``summary_per_task.json``): plain Dice, not
defined (NaN, left out of the means) when both masks are empty; HD95 in mm with the image's spacing, NaN when a
mask is empty. :func:`hd95` follows medpy's definition (border = mask minus its erosion with the 6-neighbourhood,
distances by Euclidean distance transform, 95th percentile of each direction, the larger of the two).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

#: DoDNet's HD95 when exactly one of prediction and reference is empty (``postp.py``)
DODNET_EMPTY_HD95 = 373.12866
#: DoDNet removes tumour components of at most this many voxels (``continues_region_extract_tumor``)
DODNET_SMALL_TUMOUR_VOXELS = 50
#: task index -> (organ components kept or None, tumour rule: "small" removal or "largest" component or None)
DODNET_POSTPROCESSING = {
    0: (1, "small"),    # liver
    1: (2, "largest"),  # kidney
    2: (None, "small"),  # hepatic vessel: the vessel is left as it is
    3: (1, "small"),    # pancreas
    4: (None, "largest"),  # colon tumour
    5: (None, "largest"),  # lung tumour
    6: (1, None),       # spleen
}
_CONNECTIVITY_18 = ndimage.generate_binary_structure(3, 2)


def keep_largest_components(mask: np.ndarray, keep: int) -> np.ndarray:
    """DoDNet's ``continues_region_extract_organ``: the ``keep`` largest 18-connected components.

    As in the original, the component sizes are ranked together with the background and the first of the
    ranking (the background, unless an object is larger) is skipped.
    """
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY_18)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    ranked = np.argsort(-sizes, kind="stable")[1:1 + keep]
    return np.isin(labels, [r for r in ranked if r != 0]) & mask.astype(bool)


def remove_small_components(mask: np.ndarray, max_voxels: int = DODNET_SMALL_TUMOUR_VOXELS) -> np.ndarray:
    """DoDNet's ``continues_region_extract_tumor``: drop components of at most ``max_voxels`` when there are
    more than one."""
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY_18)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = np.flatnonzero(sizes <= max_voxels)
    return mask.astype(bool) & ~np.isin(labels, small[small != 0])


def dodnet_postprocess(task_index: int, organ: Optional[np.ndarray], tumour: Optional[np.ndarray]
                       ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """DoDNet's per-task post-processing of one case's organ and tumour masks (None where the task has none)."""
    organ_keep, tumour_rule = DODNET_POSTPROCESSING[task_index]
    if organ is not None and organ_keep is not None:
        organ = keep_largest_components(organ, organ_keep)
        if tumour is not None:
            tumour = tumour & organ
    if tumour is not None:
        if tumour_rule == "small":
            tumour = remove_small_components(tumour)
        elif tumour_rule == "largest":
            tumour = keep_largest_components(tumour, 1)
    return organ, tumour


def dice(pred: np.ndarray, ref: np.ndarray, convention: str = "ours") -> float:
    """Dice of two boolean masks: ``"ours"`` NaN when both are empty; ``"dodnet"`` 2|P&R| / (|P| + |R| + 1)."""
    inter = float(np.logical_and(pred, ref).sum())
    total = float(pred.sum()) + float(ref.sum())
    if convention == "dodnet":
        return 2.0 * inter / (total + 1.0)
    return float("nan") if total == 0 else 2.0 * inter / total


def _border(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], convention: str = "ours") -> float:
    """95th-percentile Hausdorff distance (medpy's definition) in the units of ``spacing`` (array axis order).

    Empty masks: ``"ours"`` NaN when either is empty; ``"dodnet"`` 0 when both are, 373.12866 when one is.
    """
    pred, ref = pred.astype(bool), ref.astype(bool)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_pred == 0 or n_ref == 0:
        if convention == "dodnet":
            return 0.0 if n_pred == n_ref else DODNET_EMPTY_HD95
        return float("nan")
    # every border voxel of both masks lies in their joint bounding box (+1 voxel so erosion sees the outside)
    where = np.argwhere(pred | ref)
    lo = np.maximum(where.min(0) - 1, 0)
    hi = np.minimum(where.max(0) + 2, pred.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    pred_b, ref_b = _border(pred[box]), _border(ref[box])
    spacing = tuple(float(s) for s in spacing)
    to_ref = ndimage.distance_transform_edt(~ref_b, sampling=spacing)[pred_b]
    to_pred = ndimage.distance_transform_edt(~pred_b, sampling=spacing)[ref_b]
    value = max(float(np.percentile(to_ref, 95)), float(np.percentile(to_pred, 95)))
    return value if math.isfinite(value) else float("nan")
