"""Random B-spline deformation on a coarse control-point grid (the MLEAM paper's augmentation, after V-Net).

The MLEAM paper feeds "randomly deformed versions of the training images by using dense deformation field obtained
through a 2 x 2 x 2 grid of control-points and B-spline interpolation" (V-Net's wording and augmentation). V-Net builds
it with SimpleITK: ``BSplineTransformInitializer(image, [2, 2, 2])`` (a cubic B-spline on a 2 x 2 x 2 mesh), every
control-point displacement drawn from a normal distribution, then the image resampled linearly and the label by
nearest neighbour. :class:`BSplineDeformationTransform` does that per sample on the patch nnU-Net's spatial transform
produced, in voxel units, with nearest-neighbour extrapolation at the border (no padding is pulled in). The paper
gives no displacement size; ``sigma`` (voxels, per axis) is ours.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform

__all__ = ["BSplineDeformationTransform"]


class BSplineDeformationTransform(BasicTransform):
    """Deform image (linear) and segmentation (nearest) of a sample with one random cubic B-spline field.

    ``mesh_size`` control-grid cells per axis (the paper's 2), ``sigma`` the standard deviation of the control-point
    displacements in voxels (a number or one per spatial axis), applied with probability ``p``.
    """

    def __init__(self, mesh_size: int = 2, sigma: Union[float, Sequence[float]] = 4.0, p: float = 1.0):
        super().__init__()
        if mesh_size < 1:
            raise ValueError(f"mesh_size must be >= 1, got {mesh_size}")
        self.mesh_size = int(mesh_size)
        self.sigma = sigma
        self.p = float(p)

    def get_parameters(self, **data_dict) -> dict:
        import SimpleITK as sitk

        image = data_dict["image"]
        spatial = tuple(image.shape[1:])
        if np.random.uniform() >= self.p:
            return {"transform": None}
        reference = sitk.Image([int(s) for s in spatial[::-1]], sitk.sitkFloat32)  # sitk: x y z
        transform = sitk.BSplineTransformInitializer(reference, [self.mesh_size] * len(spatial), 3)
        n_points = len(transform.GetParameters()) // len(spatial)
        sigma = np.broadcast_to(np.asarray(self.sigma, dtype=float), (len(spatial),))[::-1]  # per sitk axis x y z
        # parameters: all x displacements, then all y, then all z
        transform.SetParameters(np.concatenate([np.random.normal(0, s, n_points) for s in sigma]).tolist())
        return {"transform": transform, "reference": reference}

    @staticmethod
    def _resample(volume: torch.Tensor, transform, reference, nearest: bool) -> torch.Tensor:
        import SimpleITK as sitk

        resampler = sitk.ResampleImageFilter()
        resampler.SetReferenceImage(reference)
        resampler.SetTransform(transform)
        resampler.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
        resampler.SetUseNearestNeighborExtrapolator(True)
        channels = []
        for channel in volume.cpu().numpy():
            source = sitk.GetImageFromArray(channel.astype(np.float32))
            resampler.SetOutputPixelType(sitk.sitkFloat32)
            channels.append(sitk.GetArrayFromImage(resampler.Execute(source)))
        return torch.from_numpy(np.stack(channels)).to(volume.dtype)

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        if params["transform"] is None:
            return img
        return self._resample(img, params["transform"], params["reference"], nearest=False)

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        if params["transform"] is None:
            return segmentation
        return self._resample(segmentation, params["transform"], params["reference"], nearest=True)
