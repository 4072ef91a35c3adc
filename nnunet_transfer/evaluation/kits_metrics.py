"""The KiTS21 case metrics on arrays: volumetric Dice and Surface Dice per Hierarchical Evaluation Class (HEC).

KiTS21 scores a case on three nested regions built from the labels (0 background, 1 kidney, 2 tumor, 3 cyst):
``kidney_and_mass`` = {1, 2, 3}, ``mass`` = {2, 3} and ``tumor`` = {2}; the definitions, tolerances and the faster
surface computation are described in :mod:`nnunet_transfer.evaluation.kits`, which scores whole folders with them.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import ndimage
from surface_distance import lookup_tables

from nnunet_transfer.errors import InvalidValueError

HECS: dict[str, tuple[int, ...]] = {
    "kidney_and_mass": (1, 2, 3),
    "mass": (2, 3),
    "tumor": (2,),
}
"""Hierarchical Evaluation Classes: region name -> the labels merged into that region (official order)."""

TOLERANCES_MM: dict[str, float] = {
    "kidney_and_mass": 1.0330772532390826,
    "mass": 1.1328796488598762,
    "tumor": 1.1498198361434828,
}
"""Surface Dice tolerance per HEC in mm (``HEC_SD_TOLERANCES_MM`` of the official kits21 configuration)."""

METRICS: tuple[str, str] = ("dice", "surface_dice")
KITS_LABELS: tuple[int, ...] = (0, 1, 2, 3)

#: how many offending values an error message lists
_MAX_LISTED = 20


# --------------------------------------------------------------------------------------------------------------
# metric on arrays
# --------------------------------------------------------------------------------------------------------------


def kits_case_metrics(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]
) -> dict[str, dict[str, float]]:
    """KiTS21 Dice and Surface Dice of one prediction against one reference, per HEC.

    ``prediction`` and ``reference`` are 3D integer label maps (values in {0, 1, 2, 3}) of the same shape;
    ``spacing`` is the voxel size in mm in the *arrays'* axis order (for a SimpleITK image that is
    ``image.GetSpacing()[::-1]``). Returns ``{hec: {"dice": .., "surface_dice": ..}}`` in :data:`HECS` order.
    """
    pred = as_label_array(prediction, "prediction")
    ref = as_label_array(reference, "reference")
    if pred.ndim != 3:
        raise InvalidValueError(f"KiTS21 metrics need 3D label maps; got prediction with shape {pred.shape}")
    if pred.shape != ref.shape:
        raise InvalidValueError(
            f"prediction shape {pred.shape} differs from reference shape {ref.shape}; both must be on the same grid"
        )
    spacing_mm = _as_spacing(spacing)

    # every HEC is a subset of the foreground, so all work can be done in the foreground bounding box
    box = _bounding_box((pred > 0) | (ref > 0))
    if box is None:
        return {hec: {"dice": 1.0, "surface_dice": 1.0} for hec in HECS}
    pred, ref = pred[box], ref[box]

    results: dict[str, dict[str, float]] = {}
    for hec, labels in HECS.items():
        in_hec = np.zeros(256, dtype=bool)
        in_hec[list(labels)] = True
        dice, surface_dice = _region_metrics(in_hec[pred], in_hec[ref], spacing_mm, TOLERANCES_MM[hec])
        results[hec] = {"dice": dice, "surface_dice": surface_dice}
    return results


def _region_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float], tolerance_mm: float
) -> tuple[float, float]:
    """(Dice, Surface Dice) of two boolean masks with the official empty-mask rules."""
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    if n_pred == 0 and n_ref == 0:
        return 1.0, 1.0
    if n_pred == 0 or n_ref == 0:
        return 0.0, 0.0
    dice = 2.0 * int(np.count_nonzero(pred & ref)) / (n_pred + n_ref)
    box = _bounding_box(pred | ref)
    assert box is not None  # both masks are non-empty
    return dice, _surface_dice(pred[box], ref[box], spacing, tolerance_mm)


def _surface_dice(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float], tolerance_mm: float
) -> float:
    """Surface Dice at ``tolerance_mm`` of two non-empty boolean masks (DeepMind surfels, official definition).

    Surfels sit on the corners of the voxel grid: corner point ``c`` gets the 8-bit code of the 2x2x2 voxels
    around it, border points are those whose code is neither 0 nor 255, and the code gives the surfel area.
    A border point of one surface overlaps when a border point of the other surface lies within the tolerance;
    the candidate grid offsets are precomputed, so only border points are visited.
    """
    offsets, radius = _tolerance_offsets(spacing, tolerance_mm)
    # margin: 1 voxel so every surfel exists, plus the tolerance radius so neighbour look-ups stay in bounds
    pad = [(r + 1, r + 1) for r in radius]
    codes_pred = _neighbour_codes(np.pad(pred.view(np.uint8), pad))
    codes_ref = _neighbour_codes(np.pad(ref.view(np.uint8), pad))
    flat_offsets = offsets @ np.asarray(_element_strides(codes_pred.shape), dtype=np.int64)

    codes_pred = codes_pred.ravel()
    codes_ref = codes_ref.ravel()
    border_pred = (codes_pred != 0) & (codes_pred != 255)
    border_ref = (codes_ref != 0) & (codes_ref != 255)
    points_pred = np.flatnonzero(border_pred)
    points_ref = np.flatnonzero(border_ref)

    area_table = _surfel_area_table(spacing)
    areas_pred = area_table[codes_pred[points_pred]]
    areas_ref = area_table[codes_ref[points_ref]]
    near_pred = _has_neighbour_within(points_pred, border_ref, flat_offsets)
    near_ref = _has_neighbour_within(points_ref, border_pred, flat_offsets)

    overlap = float(np.sum(areas_ref[near_ref])) + float(np.sum(areas_pred[near_pred]))
    total = float(np.sum(areas_ref)) + float(np.sum(areas_pred))
    return overlap / total


def _has_neighbour_within(points: np.ndarray, other_border: np.ndarray, flat_offsets: np.ndarray) -> np.ndarray:
    """For each flat index in ``points``: is ``other_border`` true at any of the ``flat_offsets`` around it?

    Offsets are ordered nearest first (offset 0 settles most points), and settled points drop out.
    """
    near = np.zeros(points.size, dtype=bool)
    pending = np.arange(points.size)
    for offset in flat_offsets:
        hit = other_border[points[pending] + offset]
        near[pending[hit]] = True
        pending = pending[~hit]
        if pending.size == 0:
            break
    return near


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """8-bit code of the 2x2x2 voxel neighbourhood of every grid corner (same kernel and call as DeepMind's)."""
    return ndimage.correlate(mask, lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL, mode="constant", cval=0)


@lru_cache(maxsize=64)
def _surfel_area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Surfel area in mm^2 for each of the 256 neighbour codes at this spacing (DeepMind's table)."""
    table = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    table.flags.writeable = False
    return table


@lru_cache(maxsize=64)
def _tolerance_offsets(
    spacing: tuple[float, float, float], tolerance_mm: float
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Integer grid offsets whose length in mm is <= the tolerance, nearest first, and the radius per axis.

    The length is computed exactly like SciPy's ``distance_transform_edt`` with ``sampling`` (which the
    official code uses): ``sqrt(((d0*s0)^2 + (d1*s1)^2) + (d2*s2)^2)`` in float64, so the comparison with the
    tolerance decides the same way.
    """
    radius = tuple(int(math.floor(tolerance_mm / s)) + 1 for s in spacing)
    axes = [np.arange(-r, r + 1) for r in radius]
    offsets = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1).astype(np.int64)
    scaled = offsets.astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    scaled = scaled * scaled
    lengths = np.sqrt((scaled[:, 0] + scaled[:, 1]) + scaled[:, 2])
    keep = lengths <= tolerance_mm
    order = np.argsort(lengths[keep], kind="stable")
    offsets = offsets[keep][order]
    offsets.flags.writeable = False
    return offsets, radius  # type: ignore[return-value]


def _element_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """C-order strides in elements (not bytes) of an array of ``shape``."""
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of a boolean mask as slices, or None if the mask is empty."""
    box: list[slice] = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        nonzero = np.flatnonzero(mask.any(axis=other_axes))
        if nonzero.size == 0:
            return None
        box.append(slice(int(nonzero[0]), int(nonzero[-1]) + 1))
    return tuple(box)


def as_label_array(array: np.ndarray, name: str) -> np.ndarray:
    """Validate that ``array`` holds only KiTS labels {0,1,2,3} and return it as uint8.

    ``name`` (an array role or a file path) is used in the error message.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        return array.view(np.uint8)
    if array.dtype.kind not in "uif":
        raise InvalidValueError(f"{name}: label map has dtype {array.dtype}; expected integer labels in {KITS_LABELS}")
    if array.size == 0:
        raise InvalidValueError(f"{name}: label map is empty (shape {array.shape})")
    low, high = array.min(), array.max()
    valid = low >= 0 and high <= max(KITS_LABELS)
    if valid and array.dtype.kind == "f":
        valid = bool(np.all(array == np.round(array)))
    if not valid:
        outside = array[(array < 0) | (array > max(KITS_LABELS)) | (array != np.round(array))]
        found = np.unique(outside)[:_MAX_LISTED].tolist()
        raise InvalidValueError(
            f"{name}: unexpected label values {found}; KiTS21 label maps may only contain {KITS_LABELS} "
            f"(0 background, 1 kidney, 2 tumor, 3 cyst). Map other labels to these before evaluating."
        )
    return array.astype(np.uint8, copy=False)


def _as_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise InvalidValueError(f"spacing must be 3 positive finite numbers in mm (array axis order); got {spacing!r}")
    return values  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------------------
