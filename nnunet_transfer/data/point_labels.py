"""Centre-only annotations (points) as an nnU-Net raw dataset's labels: a JSON points file -> small sphere label maps.

Localisation pretraining (:class:`~nnunet_transfer.trainers.localization.LocalizationPretrainTrainer`) regresses
the centre of the foreground of each patch. When only centre points are annotated, :func:`write_point_labels`
writes ``labelsTr`` with label 1 in a sphere around each point, so nnU-Net's unchanged pipeline (resampling,
cropping, oversampling, augmentation) carries the points; the centre of mass of a sphere is its centre, so the
target is the annotated point up to resampling and, when a patch border cuts the sphere, at most the sphere radius.
``nnunet-transfer points-to-labels`` is the command line of :func:`write_point_labels`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np

from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.utils.json_files import read_json_object

__all__ = ["POINT_COORDINATES", "read_points_file", "sphere_label_array", "write_point_labels"]

PathLike = Union[str, Path]

#: how the points file gives a point: physical (x, y, z) in mm, or the raw image's array index (z, y, x)
POINT_COORDINATES = ("world", "voxel")


def read_points_file(path: PathLike) -> Dict[str, List[float]]:
    """``{case_id: [c0, c1(, c2)]}`` from a JSON points file, checked (one point of 2 or 3 numbers per case)."""
    path = Path(path)
    points = read_json_object(path, fix="write it as a JSON object {case_id: [coordinates]}")
    if not points:
        raise InvalidValueError(f"{path} must hold a non-empty JSON object {{case_id: [coordinates]}}")
    for case, point in points.items():
        if not (isinstance(point, list) and len(point) in (2, 3)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                        for v in point)):
            raise InvalidValueError(f"{path}: the point of case {case!r} must be a list of 2 or 3 finite numbers, "
                                    f"got {point!r}")
    return {case: [float(v) for v in point] for case, point in points.items()}


def sphere_label_array(size_xyz: Sequence[int], spacing_xyz: Sequence[float], centre_index_xyz: Sequence[float],
                       radius_mm: float) -> np.ndarray:
    """uint8 array in numpy order (reversed ``size_xyz``): 1 within ``radius_mm`` of the continuous voxel index
    ``centre_index_xyz`` (an ellipsoid in voxels for anisotropic spacing), at least the nearest voxel."""
    size = np.asarray(size_xyz, dtype=int)
    spacing = np.asarray(spacing_xyz, dtype=float)
    centre = np.asarray(centre_index_xyz, dtype=float)
    lo = np.maximum(np.floor(centre - radius_mm / spacing).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius_mm / spacing).astype(int) + 1, size)
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")  # x, y, z order
    distance_sq = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    label_xyz = np.zeros(tuple(size), dtype=np.uint8)
    label_xyz[tuple(slice(a, b) for a, b in zip(lo, hi))] = distance_sq <= radius_mm ** 2
    nearest = tuple(int(v) for v in np.clip(np.rint(centre), 0, size - 1))
    label_xyz[nearest] = 1
    return np.ascontiguousarray(label_xyz.transpose(tuple(range(len(size)))[::-1]))


def write_point_labels(points_file: PathLike, dataset_dir: PathLike, radius_mm: float = 3.0,
                       coordinates: str = "world", overwrite: bool = False) -> List[Path]:
    """Write ``labelsTr/<case><file_ending>`` of an nnU-Net raw dataset from centre points: label 1 in a sphere.

    ``points_file`` is JSON ``{case_id: point}``, one point per training case of ``dataset_dir/imagesTr``:
    ``coordinates="world"``: physical (x, y, z) in mm, the ITK/SimpleITK (LPS) convention of the image header
    (3D Slicer shows RAS: negate x and y); ``"voxel"``: array index (z, y, x) of the raw image as SimpleITK's
    ``GetArrayFromImage`` orders it (fractions allowed). 2D images take two numbers. ``radius_mm`` should be at
    least the target spacing of the configuration you train, so that the sphere survives resampling; it also bounds
    the centre bias where a patch border cuts the sphere. dataset.json must define label 1. Returns the files
    written; existing label files are only replaced with ``overwrite``.
    """
    import SimpleITK as sitk

    if coordinates not in POINT_COORDINATES:
        raise InvalidValueError(f"coordinates must be one of {POINT_COORDINATES}, got {coordinates!r}")
    if not radius_mm > 0:
        raise InvalidValueError(f"radius_mm must be positive, got {radius_mm}")
    dataset_dir = Path(dataset_dir)
    dataset_json_path = dataset_dir / "dataset.json"
    if not dataset_json_path.is_file():
        raise FileNotFoundError(f"{dataset_json_path} not found: dataset_dir must be an nnU-Net raw dataset folder "
                                "(dataset.json, imagesTr/)")
    dataset_json = read_json_object(dataset_json_path, fix="write it as nnU-Net's dataset format describes")
    file_ending = dataset_json.get("file_ending")
    labels = dataset_json.get("labels", {})
    if not file_ending or not isinstance(file_ending, str):
        raise InvalidValueError(f"{dataset_json_path} has no 'file_ending'")
    if not isinstance(labels, dict) or 1 not in labels.values():
        raise InvalidValueError(f"{dataset_json_path} must define the point label 1, e.g. "
                                '"labels": {"background": 0, "target": 1}')
    points = read_points_file(points_file)
    images = {p.name[:-len("_0000" + file_ending)]: p
              for p in sorted((dataset_dir / "imagesTr").glob("*_0000" + file_ending))}
    if not images:
        raise FileNotFoundError(f"no training images *_0000{file_ending} in {dataset_dir / 'imagesTr'}")
    unknown, unpointed = sorted(set(points) - set(images)), sorted(set(images) - set(points))
    if unknown or unpointed:
        raise InvalidValueError(f"{points_file} and {dataset_dir / 'imagesTr'} must list the same cases: "
                                f"points without an image: {unknown[:10]}, images without a point: {unpointed[:10]}")
    labels_dir = dataset_dir / "labelsTr"
    existing = [c for c in images if (labels_dir / f"{c}{file_ending}").exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} label files already exist in {labels_dir} (e.g. {existing[0]}"
                              f"{file_ending}); pass overwrite=True to replace them")

    labels_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for case, image_path in images.items():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(image_path))
        reader.ReadImageInformation()
        size, spacing = reader.GetSize(), reader.GetSpacing()
        ndim = len(size)
        point = points[case]
        if len(point) != ndim:
            raise InvalidValueError(f"case {case!r}: {len(point)} coordinates for a {ndim}D image ({image_path})")
        if coordinates == "world":
            direction = np.asarray(reader.GetDirection(), dtype=float).reshape(ndim, ndim)
            offset = np.asarray(point) - np.asarray(reader.GetOrigin())
            index = np.linalg.solve(direction, offset) / np.asarray(spacing)
        else:
            index = np.asarray(point[::-1])
        if np.any(index < -0.5) or np.any(index > np.asarray(size) - 0.5):
            raise InvalidValueError(
                f"case {case!r}: the point {point} ({coordinates}) lies outside the image {image_path} "
                f"(voxel index x,y,z {np.round(index, 2).tolist()}, size {list(size)})")
        label = sitk.GetImageFromArray(sphere_label_array(size, spacing, index, radius_mm))
        label.SetSpacing(spacing)
        label.SetOrigin(reader.GetOrigin())
        label.SetDirection(reader.GetDirection())
        out = labels_dir / f"{case}{file_ending}"
        sitk.WriteImage(label, str(out), True)
        written.append(out)
    return written
