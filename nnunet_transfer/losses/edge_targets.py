"""Ground-truth edge maps from segmentation masks by an undecimated (stationary) Haar wavelet transform.

MLEAM (Qin, "Transfer Learning with Edge Attention for Prostate MRI Segmentation") supervises the decoder's edge
maps with the high-frequency (detail) subbands of a wavelet decomposition of the ground-truth mask.

Definition (the same for the pywavelets reference and the torch implementation)
------------------------------------------------------------------------------
For an n-dimensional mask ``x`` with values in [0, 1] (n = 2 or 3; binary masks are the normal case):

1. Pad every spatial axis at its *high* end by edge replication, to an even length of at least ``N + 1``
   (1 voxel for odd ``N``, 2 for even ``N``; pywavelets' ``swtn`` needs even lengths).
2. Level-1 stationary Haar transform, ``pywt.swtn(x, 'haar', level=1, trim_approx=False, norm=False)``. Its
   coefficient at voxel ``i`` is built from the 2^n window ``[i, i+1]`` along every axis (filters
   ``lo = (1, 1)/sqrt(2)``, ``hi = (1, -1)/sqrt(2)``); its boundary handling is periodic, so without step 1 the last
   voxel would be compared with the first one and a mask touching one border would get a spurious edge on the
   opposite border. With replication the last original voxel is compared with a copy of itself (no edge) and the
   wrapped-around windows lie in the padding, which is cropped away again.
3. Edge map ``e = sqrt(sum of the squares of all 2^n - 1 detail subbands / 2^(n-2))``, cropped to the input shape.

Because the n-D Haar transform of one 2^n window is orthonormal, the detail energy equals the window's energy minus
its mean part: ``sum d^2 = sum x^2 - (sum x)^2 / 2^n``. For values in [0, 1] this is at most ``2^n / 4``, reached by a
binary window that is half foreground, so ``e`` lies in [0, 1] without any per-volume normalisation. For a binary
mask ``e = 2 sqrt(p (1 - p))`` with ``p`` the foreground fraction of the window: 1 on a flat boundary, about 0.66 on a
convex 3D corner (1 of 8 voxels), 0 inside and outside. The maps are kept *soft*: they are the regression targets of
the MSE edge loss on sigmoid outputs, the soft values are what the wavelet gives, and they carry the local boundary
geometry (faces vs. corners) that a binarised map would throw away.

The window at voxel ``i`` covers ``i`` and ``i+1``, so edges sit on the low voxel of each boundary pair: a 1D mask of
ones at ``[4:10)`` has edge voxels 3 (background side) and 9 (foreground side). This half-voxel shift is inherent to
a 2-tap filter and is the same at every deep-supervision scale.

Why undecimated: the decimated (ordinary) Haar transform only looks at the windows ``[2k, 2k+1]``. A boundary between
voxels ``2k+1`` and ``2k+2`` falls between two windows, so a mask of ones at ``[4:10)`` gets all-zero details and its
edges vanish. The stationary transform evaluates every window position.

Multi-class label maps and regions
----------------------------------
Edge maps are computed per binary mask; :func:`edge_targets_for_deep_supervision` turns nnU-Net targets into one
class-agnostic edge channel: for a label map (``C == 1``) it is the maximum over the foreground labels ``c`` of
``edge(seg == c)`` (so kidney/tumour interfaces count as edges too, and a binary mask gives exactly its own edge map);
for region targets (``C > 1``, region-based training) it is the maximum over the region channels. One channel keeps
the edge heads independent of the number of classes (as in the paper's binary prostate task).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "edge_map_reference",
    "edge_map_torch",
    "label_map_edges",
    "edge_targets_for_deep_supervision",
    "haar_detail_kernels",
]

def _high_end_padding(size: int) -> int:
    """Voxels of edge replication appended to an axis of length ``size``: even result, at least one extra voxel."""
    return 1 if size % 2 else 2


def _edge_normaliser(ndim: int) -> float:
    """Largest detail energy of a 2^ndim window with values in [0, 1]: 2^ndim / 4."""
    return 2.0 ** ndim / 4.0


def edge_map_reference(mask: np.ndarray) -> np.ndarray:
    """Soft edge map of one 2D or 3D mask with pywavelets (reference implementation, float64).

    ``mask`` holds values in [0, 1] (bool or 0/1 integers for a binary mask) and has no batch/channel axes. Returns
    an array of the same shape with values in [0, 1]; see the module docstring for the exact definition. For label
    maps call this per class (or use :func:`edge_targets_for_deep_supervision`).
    """
    arr = np.asarray(mask)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"edge_map_reference: mask must be a 2D or 3D array without batch/channel axes, got shape {arr.shape}."
        )
    arr = arr.astype(np.float64)
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(
            "edge_map_reference: mask values must lie in [0, 1] (a binary mask); got range "
            f"[{arr.min()}, {arr.max()}]. For a label map compute one mask per class (seg == c)."
        )
    import pywt  # the reference alone needs pywavelets; the torch path runs without it (e.g. the GPU check)

    padded = np.pad(arr, [(0, _high_end_padding(s)) for s in arr.shape], mode="edge")
    (coeffs,) = pywt.swtn(padded, "haar", level=1, trim_approx=False, norm=False)
    approx_key = "a" * arr.ndim
    energy = sum(np.square(band) for key, band in coeffs.items() if key != approx_key)
    edges = np.sqrt(energy / _edge_normaliser(arr.ndim))
    return edges[tuple(slice(0, s) for s in arr.shape)]


def haar_detail_kernels(ndim: int, orthonormal: bool = True, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """The 2^ndim - 1 separable Haar detail filters as a conv weight of shape (2^ndim - 1, 1, 2, ..., 2).

    Filter ``k`` is the outer product of ``lo = (1, 1)/sqrt(2)`` / ``hi = (1, -1)/sqrt(2)`` per axis, every
    combination except all-``lo`` (the approximation). Cross-correlating it with the mask at voxel ``i`` gives
    exactly pywavelets' stationary Haar detail coefficient at ``i`` (``norm=False``). With ``orthonormal=False`` the
    ``1/sqrt(2)`` factors are left out (entries +-1).
    """
    if ndim < 1:
        raise ValueError(f"haar_detail_kernels: ndim must be >= 1, got {ndim}.")
    lo = torch.tensor([1.0, 1.0], dtype=torch.float64)
    hi = torch.tensor([1.0, -1.0], dtype=torch.float64)
    kernels = []
    for combo in itertools.product((0, 1), repeat=ndim):
        if not any(combo):
            continue  # all-lo: the approximation subband
        k = (lo, hi)[combo[0]]
        for which in combo[1:]:
            k = torch.tensordot(k, (lo, hi)[which], dims=0)
        kernels.append(k)
    weight = torch.stack(kernels)[:, None]
    if orthonormal:
        weight = weight * 2.0 ** (-ndim / 2)
    return weight.to(dtype=dtype, device=device)


def edge_map_torch(mask: torch.Tensor) -> torch.Tensor:
    """Soft edge maps of a batch of masks, shape (B, C, *spatial) with 2 or 3 spatial axes; same output shape.

    Every channel is an independent mask with values in [0, 1] (bool/int masks are cast to float32, floating inputs
    keep their dtype). Runs on the mask's device as one convolution with the fixed Haar detail kernels after
    high-end edge-replication padding; equals :func:`edge_map_reference` per (batch, channel).

    The convolution uses the +-1 filters and applies the ``2^(-n/2)`` wavelet scaling afterwards, folded into the
    normaliser (``e = 2^(1-n) sqrt(sum of squared +-1 responses)``): for binary masks the convolution then works on
    small integers only, which are exact even where cuDNN computes convolutions in TF32 or half precision.
    """
    if mask.ndim not in (4, 5):
        raise ValueError(
            f"edge_map_torch: expected a (B, C, *spatial) tensor with 2 or 3 spatial axes, got shape "
            f"{tuple(mask.shape)}."
        )
    x = mask if mask.is_floating_point() else mask.to(torch.float32)
    b, c, *spatial = x.shape
    ndim = len(spatial)
    x = x.reshape(b * c, 1, *spatial)
    # F.pad takes (last axis low, last axis high, second-to-last low, ...); only the high ends are padded, by 1
    # voxel: the conv window at the last voxel then sees a replicated copy of it. Evenness is irrelevant here.
    x = F.pad(x, [0, 1] * ndim, mode="replicate")
    conv = F.conv3d if ndim == 3 else F.conv2d
    responses = conv(x, haar_detail_kernels(ndim, orthonormal=False, dtype=x.dtype, device=x.device))
    edges = torch.sqrt(responses.square().sum(dim=1)) * 2.0 ** (1 - ndim)
    return edges.reshape(b, c, *spatial)


def label_map_edges(seg: torch.Tensor, ignore_label: int | None = None) -> torch.Tensor:
    """One class-agnostic edge channel (B, 1, *spatial) from a label map (B, 1, *spatial): max over foreground labels.

    Label 0 is background; ``ignore_label`` (nnU-Net's ignore label, if the dataset has one) is not treated as a
    class. Returns float32 zeros when no foreground label is present.
    """
    if seg.ndim not in (4, 5) or seg.shape[1] != 1:
        raise ValueError(
            f"label_map_edges: expected a label map of shape (B, 1, *spatial), got {tuple(seg.shape)}."
        )
    labels = torch.unique(seg)
    labels = labels[labels != 0]
    if ignore_label is not None:
        labels = labels[labels != ignore_label]
    if labels.numel() == 0:
        return torch.zeros(seg.shape, dtype=torch.float32, device=seg.device)
    view = (1, -1) + (1,) * (seg.ndim - 2)
    one_hot = (seg == labels.to(seg.dtype).view(view)).to(torch.float32)
    return edge_map_torch(one_hot).amax(dim=1, keepdim=True)


def edge_targets_for_deep_supervision(seg_list: Sequence[torch.Tensor],
                                      ignore_label: int | None = None) -> list[torch.Tensor]:
    """Edge targets (B, 1, *spatial_i), float32, for every deep-supervision target, in the given order.

    ``seg_list`` is what nnU-Net's data loader yields with deep supervision on: targets per scale, highest resolution
    first, each either a label map (B, 1, *spatial) or region maps (B, R, *spatial) with R > 1 (region-based
    training). Edges are computed at each scale from that scale's (nearest-neighbour downsampled) target, so they line
    up with the network's outputs at that scale. For region targets with an ignore label nnU-Net appends the ignore
    mask as the last channel: pass ``ignore_label`` (any int) and that channel is dropped before taking edges.
    """
    if isinstance(seg_list, torch.Tensor):
        raise TypeError(
            "edge_targets_for_deep_supervision: expected a list of targets (one per deep-supervision scale), got a "
            "single tensor; wrap it in a list."
        )
    out = []
    for i, seg in enumerate(seg_list):
        if seg.ndim not in (4, 5):
            raise ValueError(
                f"edge_targets_for_deep_supervision: target {i} must be (B, C, *spatial) with 2 or 3 spatial axes, "
                f"got shape {tuple(seg.shape)}."
            )
        if seg.shape[1] == 1:
            out.append(label_map_edges(seg, ignore_label))
            continue
        regions = seg[:, :-1] if ignore_label is not None else seg
        if regions.shape[1] == 0:
            raise ValueError(
                f"edge_targets_for_deep_supervision: target {i} has only the ignore channel, no region channels."
            )
        out.append(edge_map_torch((regions > 0).to(torch.float32)).amax(dim=1, keepdim=True))
    return out
