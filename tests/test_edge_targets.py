"""Wavelet edge targets: torch implementation vs. the pywavelets reference, conventions, and why undecimated."""

import math

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from nnunet_transfer.losses.edge_targets import (
    edge_map_reference,
    edge_map_torch,
    edge_targets_for_deep_supervision,
    haar_detail_kernels,
    label_map_edges,
)


def _random_blobs(rng: np.random.Generator, shape: tuple[int, ...], n: int = 3) -> np.ndarray:
    """Binary mask made of a few random boxes (realistic, edges of all orientations) plus random speckle."""
    mask = np.zeros(shape, dtype=bool)
    for _ in range(n):
        lo = [rng.integers(0, s - 1) for s in shape]
        hi = [rng.integers(l + 1, s + 1) for l, s in zip(lo, shape)]
        mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    mask ^= rng.random(shape) > 0.95
    return mask


@pytest.mark.parametrize("ndim", [2, 3])
def test_haar_detail_kernels_reproduce_pywt_swtn_subbands(ndim):
    # pywt.swtn is periodic: a circular high-end pad + valid conv gives exactly its detail coefficients, in its key
    # order ('ad', 'da', 'dd' in 2D; 'aad', ..., 'ddd' in 3D) and with its signs.
    rng = np.random.default_rng(ndim)
    shape = (6, 8, 4)[:ndim]
    x = rng.random(shape)
    coeffs = pywt.swtn(x, "haar", level=1, trim_approx=False, norm=False)[0]
    detail_keys = [k for k in coeffs if k != "a" * ndim]
    xt = torch.from_numpy(x)[None, None]
    xt = F.pad(xt, [0, 1] * ndim, mode="circular")
    conv = F.conv3d if ndim == 3 else F.conv2d
    got = conv(xt, haar_detail_kernels(ndim, dtype=torch.float64))[0]
    assert got.shape[0] == len(detail_keys) == 2 ** ndim - 1
    for i, key in enumerate(detail_keys):
        np.testing.assert_allclose(got[i].numpy(), coeffs[key], atol=1e-12, err_msg=key)
    # the +-1 variant is the same filters without the 2^(-n/2) scaling
    torch.testing.assert_close(haar_detail_kernels(ndim, orthonormal=False, dtype=torch.float64),
                               haar_detail_kernels(ndim, dtype=torch.float64) * 2 ** (ndim / 2))


@pytest.mark.parametrize("shape", [(9, 11), (8, 12), (5, 9, 7), (6, 8, 10)])
def test_torch_matches_pywavelets_reference_on_random_masks(shape):
    rng = np.random.default_rng(sum(shape))
    masks = np.stack([np.stack([_random_blobs(rng, shape) for _ in range(2)]) for _ in range(2)])  # (B=2, C=2, ...)
    got = edge_map_torch(torch.from_numpy(masks))
    assert got.dtype == torch.float32 and got.shape == masks.shape
    for b in range(2):
        for c in range(2):
            ref = edge_map_reference(masks[b, c])
            assert ref.shape == shape
            np.testing.assert_allclose(got[b, c].numpy(), ref, atol=1e-6)
    # float64 input stays float64 and matches tighter
    got64 = edge_map_torch(torch.from_numpy(masks).double())
    assert got64.dtype == torch.float64
    np.testing.assert_allclose(got64[1, 0].numpy(), edge_map_reference(masks[1, 0]), atol=1e-12)


def test_soft_masks_match_reference_and_stay_in_unit_range():
    rng = np.random.default_rng(7)
    soft = rng.random((6, 7, 5))
    ref = edge_map_reference(soft)
    got = edge_map_torch(torch.from_numpy(soft)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert ref.min() >= 0 and ref.max() <= 1


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("axis", [0, 1])
def test_block_boundary_edges_are_found_at_both_boundaries(ndim, axis):
    # ones at [4:10) along one axis: the boundary pairs 3|4 and 9|10 both start at an odd voxel (a decimated Haar
    # transform only sees pairs starting at even voxels); the stationary transform marks voxel 3 (background side)
    # and voxel 9 (foreground side), nothing else.
    shape = (14,) * ndim
    mask = np.zeros(shape, dtype=np.uint8)
    index = [slice(None)] * ndim
    index[axis] = slice(4, 10)
    mask[tuple(index)] = 1
    ref = edge_map_reference(mask)
    got = edge_map_torch(torch.from_numpy(mask)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    profile = np.moveaxis(ref, axis, 0).reshape(shape[0], -1)
    expected = np.zeros(shape[0])
    expected[[3, 9]] = 1.0  # flat boundary: half the window is foreground -> edge value exactly 1
    np.testing.assert_allclose(profile, np.repeat(expected[:, None], profile.shape[1], axis=1), atol=1e-12)


def test_decimated_haar_misses_the_block_boundary_that_the_stationary_transform_finds():
    # Why undecimated: the decimated transform only looks at windows [2k, 2k+1]; both boundaries of [4:10) fall
    # between windows, so all its detail subbands vanish and the mask would have no edges at all.
    mask = np.zeros((12, 12, 12))
    mask[4:10, 4:10, 4:10] = 1
    decimated = pywt.dwtn(mask, "haar")
    assert all(np.abs(band).max() == 0 for key, band in decimated.items() if key != "aaa")
    stationary = edge_map_reference(mask)
    assert stationary[3, 5, 5] == pytest.approx(1.0) and stationary[9, 5, 5] == pytest.approx(1.0)
    # shifted by one voxel the decimated transform does see it: its result depends on where the object sits
    shifted = np.roll(mask, 1, axis=0)
    assert np.abs(pywt.dwtn(shifted, "haar")["daa"]).max() > 0


def test_no_wraparound_edges_at_the_volume_border():
    # mask touching the low border: periodic swtn without padding would compare the last voxel with the first one
    mask = np.zeros((10, 8))
    mask[:4] = 1
    naive = pywt.swtn(mask, "haar", level=1)[0]
    assert np.abs(naive["da"][-1]).max() > 0  # the spurious wrap-around edge that the padding removes
    ref = edge_map_reference(mask)
    assert np.all(ref[-1] == 0) and np.all(ref[3] == pytest.approx(1.0))
    got = edge_map_torch(torch.from_numpy(mask)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # a full mask has no edges anywhere
    assert edge_map_reference(np.ones((5, 7, 6))).max() == 0


def test_edge_values_encode_local_geometry():
    mask = np.zeros((8, 8, 8))
    mask[2:6, 2:6, 2:6] = 1
    ref = edge_map_reference(mask)
    assert ref[3, 3, 3] == 0  # inside
    assert ref[1, 3, 3] == pytest.approx(1.0)  # flat face: 4 of 8 window voxels are foreground
    assert ref[1, 1, 1] == pytest.approx(2 * math.sqrt(1 / 8 * 7 / 8))  # convex corner: 1 of 8
    assert ref.max() <= 1.0 + 1e-12


def test_reference_rejects_label_maps_and_wrong_dims():
    with pytest.raises(ValueError, match="seg == c"):
        edge_map_reference(np.full((4, 4), 2))
    with pytest.raises(ValueError, match="2D or 3D"):
        edge_map_reference(np.zeros(8))
    with pytest.raises(ValueError, match="2 or 3 spatial"):
        edge_map_torch(torch.zeros(2, 8))


def test_label_map_edges_is_max_over_foreground_classes_and_skips_ignore_label():
    seg = np.zeros((9, 10, 11), dtype=np.int64)
    seg[2:7, 2:8, 2:9] = 1
    seg[3:6, 4:7, 5:9] = 2  # tumour inside kidney: the 1|2 interface is an edge too
    seg[0, :, :] = 3  # treated as the ignore label below
    expected_all = np.maximum.reduce([edge_map_reference(seg == c) for c in (1, 2, 3)])
    expected_no_ignore = np.maximum(edge_map_reference(seg == 1), edge_map_reference(seg == 2))
    t = torch.from_numpy(seg)[None, None]
    np.testing.assert_allclose(label_map_edges(t)[0, 0].numpy(), expected_all, atol=1e-6)
    got = label_map_edges(t, ignore_label=3)[0, 0].numpy()
    np.testing.assert_allclose(got, expected_no_ignore, atol=1e-6)
    assert got[4, 5, 4] > 0  # kidney|tumour interface (voxel 4 in kidney, 5 in tumour along x)
    # binary label map: exactly the mask's edge map
    binary = (seg == 1).astype(np.int16)
    np.testing.assert_allclose(label_map_edges(torch.from_numpy(binary)[None, None])[0, 0].numpy(),
                               edge_map_reference(binary), atol=1e-6)
    # no foreground -> zeros
    assert label_map_edges(torch.zeros(1, 1, 4, 4, dtype=torch.int64)).abs().max() == 0


def test_edge_targets_for_deep_supervision_label_maps_and_regions():
    rng = np.random.default_rng(3)
    full = torch.from_numpy(np.stack([_random_blobs(rng, (8, 16, 16)) for _ in range(2)])[:, None].astype(np.int16))
    full = full * 2  # label 2 only
    half = full[:, :, :, ::2, ::2]
    targets = edge_targets_for_deep_supervision([full, half])
    assert [t.shape for t in targets] == [(2, 1, 8, 16, 16), (2, 1, 8, 8, 8)]
    assert all(t.dtype == torch.float32 for t in targets)
    np.testing.assert_allclose(targets[1][1, 0].numpy(), edge_map_reference(half[1, 0].numpy() > 0), atol=1e-6)

    # region-based: (B, R, ...) binary channels, max over regions; with an ignore label the last channel is dropped
    r0 = _random_blobs(rng, (6, 10, 12))
    r1 = _random_blobs(rng, (6, 10, 12))
    ignore = np.zeros((6, 10, 12), dtype=bool)
    ignore[:, :3] = True
    regions = torch.from_numpy(np.stack([r0, r1, ignore])[None].astype(np.uint8))
    with_ignore = edge_targets_for_deep_supervision([regions], ignore_label=99)[0]
    expected = np.maximum(edge_map_reference(r0), edge_map_reference(r1))
    np.testing.assert_allclose(with_ignore[0, 0].numpy(), expected, atol=1e-6)
    without = edge_targets_for_deep_supervision([regions])[0]
    expected_all = np.maximum(expected, edge_map_reference(ignore))
    np.testing.assert_allclose(without[0, 0].numpy(), expected_all, atol=1e-6)

    with pytest.raises(TypeError, match="list"):
        edge_targets_for_deep_supervision(full)
