"""Shared machinery of the dataset converters: where nnU-Net raw datasets live, how a dataset folder is built
safely, and the checked conversion of one 3D image/label pair (used by the MOTS and KiTS converters).

Guarantees every converter gets from here:

* **Location.** The target is ``$nnUNet_raw/DatasetXXX_Name``, found by the one lookup of nnU-Net's folders
  (:func:`nnunet_transfer.discovery.optional_nnunet_folder`, read at call time like nnU-Net 2.8 does).
* **No ambiguity.** A dataset id that is already used under another name in ``nnUNet_raw``,
  ``nnUNet_preprocessed`` or ``nnUNet_results`` is refused: nnU-Net resolves ``-d ID`` by folder prefix and
  would fail (or pick the wrong dataset) later.
* **All or nothing.** :func:`staged_dataset` builds the dataset in a hidden staging folder next to the target
  (same filesystem) and renames it into place only when everything succeeded. On any failure, including
  ``KeyboardInterrupt``, the staging folder is removed and a previous dataset stays untouched.
* **Deterministic.** Cases are processed in sorted order, files are written by SimpleITK (gzip without
  time stamps) or copied byte for byte, dataset.json has a fixed key order: the same sources give the same
  files, so re-running replaces a dataset with an identical one.
* **Sources are read only.** Nothing here opens a source file for writing.

Size: about 567 lines, as the one writer of nnU-Net raw datasets that every converter shares: staging, checks,
locking and publishing belong together so that nothing is half-written.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from nnunet_transfer.data.errors import ConversionError
from nnunet_transfer.data.existing_dataset import dataset_lock, recover_interrupted, refuse_to_replace
from nnunet_transfer.data.nifti_integrity import nifti_problem
from nnunet_transfer.discovery import folder_not_set_message, optional_nnunet_folder, set_nnunet_folders
from nnunet_transfer.utils.atomic import swap_into_place

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")
R = TypeVar("R")

RAW_ENV = "nnUNet_raw"
#: other nnU-Net roots in which a dataset id must not be used under a different name
OTHER_ROOT_ENVS = ("nnUNet_preprocessed", "nnUNet_results")

NIFTI_ENDINGS = (".nii.gz", ".nii")
_DATASET_DIR = re.compile(r"^Dataset(\d+)_(.+)$")
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: geometry tolerances between an image and its label (real data carries float noise in headers)
SPACING_RTOL = 1e-3  # relative, per axis
ORIGIN_TOL_VOXELS = 0.01  # absolute, as a fraction of the smallest voxel spacing
DIRECTION_ATOL = 1e-3  # absolute, per direction-cosine entry


# ----------------------------------------------------------------------------------------------------------------
# where datasets go


def nnunet_raw_dir() -> Path:
    """The ``nnUNet_raw`` folder, read at call time; :class:`ConversionError` (naming the fix) when unset."""
    folder = optional_nnunet_folder(RAW_ENV)
    if folder is None:
        raise ConversionError(folder_not_set_message(RAW_ENV, ", so there is no place to write the nnU-Net raw "
                                                              "dataset"))
    return folder


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_Name`` for nnU-Net; validates the id (1..999) and the name (no spaces or slashes)."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, (int, np.integer)) or not 1 <= dataset_id <= 999:
        raise ConversionError(f"dataset id {dataset_id!r} is invalid: nnU-Net dataset ids are integers 1..999")
    if not _NAME_OK.match(name or ""):
        raise ConversionError(f"dataset name {name!r} is invalid: use letters, digits, '_', '-' or '.', "
                              f"starting with a letter or digit (e.g. 'KiTS21')")
    return f"Dataset{int(dataset_id):03d}_{name}"


def conflicting_datasets(dataset_id: int, name: str) -> List[Path]:
    """Folders ``DatasetXXX_Other`` with the same id but another name in any nnU-Net root that is set."""
    conflicts: List[Path] = []
    roots = [nnunet_raw_dir(), *set_nnunet_folders(OTHER_ROOT_ENVS)]
    for root in roots:
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            m = _DATASET_DIR.match(entry.name)
            if m and entry.is_dir() and int(m.group(1)) == int(dataset_id) and m.group(2) != name:
                conflicts.append(entry)
    return conflicts


def target_dataset_folder(dataset_id: int, name: str, force: bool = False) -> Path:
    """``$nnUNet_raw/DatasetXXX_Name``, after checking that the id is not taken by another dataset name and (early,
    before the work of converting) that no dataset is there that ``force`` does not allow to replace.

    The check runs under the dataset id's lock, after what killed conversions left behind is cleaned up or
    restored; :func:`staged_dataset` repeats it right before publishing.
    """
    folder_name = dataset_folder_name(dataset_id, name)
    conflicts = conflicting_datasets(dataset_id, name)
    if conflicts:
        listing = ", ".join(str(c) for c in conflicts)
        raise ConversionError(
            f"dataset id {int(dataset_id)} is already used by {listing}; writing {folder_name} would make "
            f"'-d {int(dataset_id)}' ambiguous for nnU-Net. Choose another id, or delete/rename the existing "
            f"dataset if it is no longer needed.")
    target = nnunet_raw_dir() / folder_name
    target.parent.mkdir(parents=True, exist_ok=True)
    with dataset_lock(target):
        refuse_to_replace(target, force, recover_interrupted(target))
    return target


def _remove_tree_reporting(folder: Path) -> None:
    """Remove ``folder``; if that fails, say so on stderr (we are already handling another error)."""
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as e:  # do not mask the error that brought us here, but do not hide this one either
        print(f"WARNING: could not remove the staging folder {folder}: {e}. Delete it by hand.", file=sys.stderr)


@contextlib.contextmanager
def staged_dataset(target: PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a hidden, empty staging folder next to ``target``; publish it as ``target`` on success.

    The whole conversion holds the lock of the dataset id (a second run for the same id refuses at once), first
    cleans up what killed conversions left behind (restoring a dataset they had set aside), and checks right
    before publishing that ``target`` may be replaced (``force``; a symbolic link never is).

    Publishing renames the old dataset (if any) aside, renames the staging folder into place and then deletes
    the old one: a dataset folder is never half written, and only between those two renames is there none (if
    the second rename fails the old one is moved back; if the process is killed there, the next run puts it back).
    On any exception (or ``KeyboardInterrupt``) inside the ``with`` block the staging folder is deleted and
    ``target`` is untouched. A process killed with SIGKILL can leave a hidden ``.DatasetXXX_Name.staging-PID-*``
    folder behind; the next conversion removes it
    (:func:`~nnunet_transfer.data.existing_dataset.recover_interrupted`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with dataset_lock(target):
        restored = recover_interrupted(target)
        refuse_to_replace(target, force, restored)
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging = target.parent / f".{target.name}.staging-{token}"
        staging.mkdir()
        try:
            yield staging
        except BaseException:
            _remove_tree_reporting(staging)
            raise
        try:
            refuse_to_replace(target, force, restored)  # right before publishing, still under the lock
            if target.exists():
                _remove_tree_reporting(swap_into_place(staging, target, target.parent / f".{target.name}.old-{token}"))
            else:
                os.rename(staging, target)
        except BaseException:
            _remove_tree_reporting(staging)
            raise


def write_dataset_json(folder: PathLike, channel_names: Mapping[Any, str], labels: Mapping[str, Any],
                       num_training_cases: int, file_ending: str, **extra: Any) -> None:
    """Write dataset.json with nnU-Net's own ``generate_dataset_json`` (copies the dicts it would mutate)."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    extra.setdefault("converted_by", "nnunet-transfer")
    generate_dataset_json(str(folder), dict(channel_names), dict(labels), int(num_training_cases), file_ending,
                          **extra)


# ----------------------------------------------------------------------------------------------------------------
# small path helpers


def is_hidden(name: str) -> bool:
    """Hidden files, including the macOS resource forks ``._name`` that archives from Macs carry."""
    return name.startswith(".")


def nifti_stem(name: str) -> Optional[str]:
    """``volume-3`` for ``volume-3.nii`` / ``volume-3.nii.gz``; None for other files."""
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)]
    return None


def trailing_number(stem: str) -> Optional[int]:
    """The integer at the end of a file stem (``liver_12`` -> 12, ``case_00012`` -> 12), else None."""
    m = re.search(r"(\d+)$", stem)
    return int(m.group(1)) if m else None


def relative_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (for dataset.json, stable across OSes)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


# ----------------------------------------------------------------------------------------------------------------
# per-case work, optionally in parallel


def run_cases(func: Callable[[T], R], jobs: Sequence[T], num_workers: int = 1, title: str = "converting") -> List[R]:
    """``[func(job) for job in jobs]`` in job order, in ``num_workers`` processes, printing a progress counter.

    ``func`` must be a module-level function (it is pickled for the worker processes, which are spawned, not
    forked, so that torch/OpenMP state of the parent cannot deadlock them).
    """
    n = len(jobs)
    if n == 0:
        return []
    every = max(1, min(25, math.ceil(n / 10)))
    results: List[R] = []

    def report(i: int) -> None:
        if i % every == 0 or i == n:
            print(f"{title}: {i}/{n} cases", flush=True)

    workers = max(1, min(int(num_workers), n))
    if workers == 1:
        for i, job in enumerate(jobs, 1):
            results.append(func(job))
            report(i)
        return results
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for i, result in enumerate(pool.imap(func, jobs), 1):
            results.append(result)
            report(i)
    return results


# ----------------------------------------------------------------------------------------------------------------
# one 3D image/label pair


@dataclass(frozen=True)
class VolumeCase:
    """One 3D case to convert: source files, destination files, and the label values allowed and remapped.

    ``label_map`` maps every allowed non-zero source value to its output value (0 stays 0). ``label`` None
    means an unlabelled case (image only).
    """

    case_id: str
    image: Path
    label: Optional[Path]
    image_out: Path
    label_out: Optional[Path]
    label_map: Tuple[Tuple[int, int], ...]
    #: False: the label's spacing/origin/direction are not checked, it is written with the image's geometry
    #: (``--geometry-mismatch use-image``; the array sizes must still agree)
    check_label_geometry: bool = True


def _sitk_message(err: BaseException) -> str:
    """The useful last part of a SimpleITK/ITK exception text, on one line."""
    text = " ".join(str(err).split())
    if "ERROR:" in text:
        text = text.split("ERROR:", 1)[1].strip()
    return text[:400]


def read_volume(path: Path, header_only: bool = False) -> Tuple[Any, Optional[str]]:
    """(SimpleITK image, None) or (None, problem naming the file and SimpleITK's error).

    ``header_only``: a SimpleITK ``ImageFileReader`` after ``ReadImageInformation`` instead of the image, for a
    file whose voxels are not needed (it is copied byte for byte): the integrity check below still reads its whole
    stream once, but SimpleITK does not decompress it a second time.
    """
    import SimpleITK as sitk

    if not path.is_file():
        return None, f"file {path} does not exist"
    try:
        if header_only:
            image = sitk.ImageFileReader()
            image.SetFileName(str(path))
            image.ReadImageInformation()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:  # SimpleITK reports unreadable/corrupt files as RuntimeError
        return None, f"cannot read {path} (is it a complete, uncorrupted NIfTI file?): SimpleITK: {_sitk_message(e)}"
    problem = nifti_problem(path)  # SimpleITK reads truncated files (zeros) and NaN/inf voxels (as 0) silently
    return (None, problem) if problem is not None else (image, None)


def size_problems(image: Any, image_path: Path, label: Any, label_path: Path) -> List[str]:
    """A size difference between image and label (the one geometry difference no header fix can repair)."""
    if image.GetSize() != label.GetSize():
        return [f"size mismatch between image {image_path} and label {label_path}: {image.GetSize()} vs "
                f"{label.GetSize()} voxels (--geometry-mismatch skip leaves such a case out)"]
    return []


def geometry_problems(image: Any, image_path: Path, label: Any, label_path: Path) -> List[str]:
    """Differences in size, spacing, origin or direction between image and label beyond the tolerances.

    ``image`` and ``label`` are SimpleITK images or ``ImageFileReader`` objects after ``ReadImageInformation``.
    """
    problems: List[str] = size_problems(image, image_path, label, label_path)
    if problems:
        return problems
    both = f"image {image_path} and label {label_path}"
    sp_i, sp_l = np.array(image.GetSpacing()), np.array(label.GetSpacing())
    if not np.allclose(sp_i, sp_l, rtol=SPACING_RTOL, atol=0):
        problems.append(f"spacing mismatch between {both}: {tuple(sp_i)} vs {tuple(sp_l)}")
    o_i, o_l = np.array(image.GetOrigin()), np.array(label.GetOrigin())
    if not np.allclose(o_i, o_l, rtol=0, atol=ORIGIN_TOL_VOXELS * float(np.min(np.abs(sp_i)))):
        problems.append(f"origin mismatch between {both}: {tuple(o_i)} vs {tuple(o_l)}")
    d_i, d_l = np.array(image.GetDirection()), np.array(label.GetDirection())
    if not np.allclose(d_i, d_l, rtol=0, atol=DIRECTION_ATOL):
        problems.append(f"direction mismatch between {both}: {tuple(np.round(d_i, 6))} vs {tuple(np.round(d_l, 6))}")
    if problems:
        problems[-1] += (" (fix the header of the label file or re-export it on the image's grid; or pass "
                         "--geometry-mismatch use-image to write the label with the image's geometry when the header, "
                         "not the voxels, is wrong, or --geometry-mismatch skip to leave the case out)")
    return problems


def read_header(path: Path) -> Optional[Any]:
    """The header of a volume (a SimpleITK ``ImageFileReader`` after ``ReadImageInformation``), None if unreadable.

    Unreadable files are reported by the full conversion of the case; this cheap pass reads no voxel data.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader


def has_identity_affine(header: Any) -> bool:
    """Spacing 1, origin 0 and identity direction: a header that was most likely never filled in."""
    dim = len(header.GetSize())
    return (np.allclose(header.GetSpacing(), 1.0, rtol=0, atol=1e-6)
            and np.allclose(header.GetOrigin(), 0.0, rtol=0, atol=1e-6)
            and np.allclose(header.GetDirection(), np.eye(dim).ravel(), rtol=0, atol=1e-6))


GEOMETRY_POLICIES = ("error", "use-image", "skip")


@dataclass
class GeometryReport:
    """What :func:`check_case_geometries` decided under a ``--geometry-mismatch`` policy, per case."""

    policy: str
    use_image_geometry: List[str]
    skipped: List[str]
    identity_affine: List[str]

    def summary_lines(self) -> List[str]:
        lines = []
        if self.use_image_geometry:
            lines.append(f"--geometry-mismatch use-image: {len(self.use_image_geometry)} labels written with their "
                         f"image's geometry: {', '.join(self.use_image_geometry)}")
        if self.skipped:
            lines.append(f"--geometry-mismatch skip: {len(self.skipped)} cases left out: {', '.join(self.skipped)}")
        return lines

    def to_json(self) -> dict:
        return {"policy": self.policy, "label_geometry_from_image": self.use_image_geometry,
                "skipped": self.skipped, "identity_affine": self.identity_affine}


def check_case_geometries(cases: Sequence[Tuple[str, Path, Optional[Path]]], policy: str) -> GeometryReport:
    """Read the image and label headers of ``(case_id, image, label)`` cases and apply a ``--geometry-mismatch``
    policy to the cases whose geometries differ.

    ``error``: nothing is decided here; the conversion of the case reports the mismatch (its message names the
    option). ``use-image``: a label whose array size equals the image's is written with the image's geometry
    (a size mismatch stays an error). ``skip``: a case with any mismatch is left out. Cases whose image has an
    identity affine (spacing 1, origin 0: LiTS volumes 28-47) are listed for a warning; they are converted.
    """
    if policy not in GEOMETRY_POLICIES:
        raise ConversionError(f"--geometry-mismatch must be one of {', '.join(GEOMETRY_POLICIES)}, got {policy!r}")
    report = GeometryReport(policy, [], [], [])
    for case_id, image_path, label_path in cases:
        image = read_header(image_path)
        if image is None:
            continue  # unreadable: reported by the conversion of the case
        if has_identity_affine(image):
            report.identity_affine.append(case_id)
        if policy == "error":
            continue  # nothing to decide: the conversion of the case reports a mismatch (so no label header here)
        label = read_header(label_path) if label_path is not None else None
        if label is None or not geometry_problems(image, image_path, label, label_path):
            continue
        if policy == "skip":
            report.skipped.append(case_id)
        elif policy == "use-image" and not size_problems(image, image_path, label, label_path):
            report.use_image_geometry.append(case_id)
    return report


def warn_identity_affines(case_ids: Sequence[str], title: str) -> None:
    """Print one warning per case whose image header is the identity (spacing 1 mm, origin 0)."""
    for case_id in case_ids:
        print(f"{title} WARNING: {case_id}: the image header has an identity affine (spacing 1, 1, 1 mm, origin 0; "
              f"LiTS volumes 28-47 ship like this), so nnU-Net plans with 1 mm voxels for it; converted as it is",
              flush=True)


def label_values(arr: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array; chunked bincount for small ranges (no full-size copies)."""
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if hi - lo < 16:  # a label map: one comparison per value in the range is several times faster than bincount
        return np.array([v for v in range(lo, hi + 1) if v in (lo, hi) or (arr == v).any()], dtype=np.int64)
    if hi - lo > 65535:
        return np.unique(arr).astype(np.int64)
    counts = np.zeros(hi - lo + 1, dtype=np.int64)
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(1, -1)
    for row in flat:
        counts += np.bincount(row.astype(np.int64) - lo, minlength=hi - lo + 1)
    return np.flatnonzero(counts) + lo


def integer_label_array(arr: np.ndarray, path: Path) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """The label array as integers, or a problem if it holds non-finite or non-integer values."""
    if arr.dtype.kind in "iub":
        return arr, None
    if arr.dtype.kind != "f":
        return None, f"label {path} has pixel type {arr.dtype}, expected integer labels"
    finite = np.isfinite(arr)
    if not finite.all():
        return None, f"label {path} contains NaN/inf values; labels must be integers"
    frac = arr != np.round(arr)
    if frac.any():
        examples = sorted(set(np.unique(arr[frac])[:5].tolist()))
        return None, (f"label {path} contains non-integer values (e.g. {examples}); a segmentation must hold "
                      f"integer class values (was it resampled with linear interpolation?)")
    return arr.astype(np.int64), None


def remap_labels(arr: np.ndarray, label_map: Mapping[int, int], present: Optional[Sequence[int]] = None
                 ) -> np.ndarray:
    """Source values -> output values (uint8; values must already be known to be allowed).

    ``present``: the values ``arr`` holds, when known; with few of them one masked assignment per non-zero output
    is used, which is several times faster than the lookup table's full-size index conversion.
    """
    if present is not None and len(present) <= 4:
        out = np.zeros(arr.shape, dtype=np.uint8)
        for src in present:
            if label_map.get(int(src), 0):
                out[arr == src] = label_map[int(src)]
        return out
    size = max([0, *label_map.keys()]) + 1
    lut = np.zeros(size, dtype=np.uint8)
    for src, dst in label_map.items():
        lut[src] = dst
    return lut[arr]


def convert_volume_case(job: VolumeCase) -> List[str]:
    """Check one case and, if it is fine, write it; returns the list of problems (empty on success).

    Checks: both files readable, 3D scalar volumes, image without NaN, label geometry equal to the image's
    (within tolerance), label values integer and allowed. The image is copied byte for byte when it already is
    ``.nii.gz`` (else re-written compressed by SimpleITK); the label is remapped, stored as uint8 and given the
    image's exact geometry so that nnU-Net sees identical headers.
    """
    import SimpleITK as sitk

    problems: List[str] = []
    # a .nii.gz image is copied as it is: its header and read_volume's integrity check (complete stream, finite
    # voxels) are all it needs, so SimpleITK reads only the header (one decompression instead of two)
    copy_image = job.image.name.endswith(".nii.gz")
    image, err = read_volume(job.image, header_only=copy_image)
    if err:
        problems.append(err)
    label = None
    if job.label is not None:
        label, err = read_volume(job.label)
        if err:
            problems.append(err)
    for vol, path in ((image, job.image), (label, job.label)):
        components = vol.GetNumberOfComponents() if isinstance(vol, sitk.ImageFileReader) else \
            vol.GetNumberOfComponentsPerPixel() if vol is not None else 1
        if vol is not None and (vol.GetDimension() != 3 or components != 1):
            problems.append(f"{path} is not a 3D single-channel volume (dimension {vol.GetDimension()}, "
                            f"{components} components per voxel)")
    if problems:
        return problems
    if not copy_image:
        image_arr = sitk.GetArrayViewFromImage(image)
        if image_arr.dtype.kind == "f" and np.isnan(image_arr).any():
            problems.append(f"image {job.image} contains NaN values; replace them (e.g. by the minimum intensity)")
    remapped = None
    if label is not None:
        problems += (geometry_problems(image, job.image, label, job.label) if job.check_label_geometry
                     else size_problems(image, job.image, label, job.label))
        arr, err = integer_label_array(sitk.GetArrayViewFromImage(label), job.label)
        if err:
            problems.append(err)
        else:
            label_map = dict(job.label_map)
            allowed = sorted({0, *label_map})
            present = label_values(arr).tolist()
            bad = [v for v in present if v not in allowed]
            if bad:
                problems.append(f"label {job.label} contains values {bad} that are not allowed for this dataset; "
                                f"allowed values are {allowed}")
            elif not problems:
                remapped = remap_labels(arr, label_map, present)
    if problems:
        return problems

    job.image_out.parent.mkdir(parents=True, exist_ok=True)
    if copy_image:
        shutil.copyfile(job.image, job.image_out)
    else:
        sitk.WriteImage(image, str(job.image_out), True)
    if remapped is not None and job.label_out is not None:
        job.label_out.parent.mkdir(parents=True, exist_ok=True)
        out = sitk.GetImageFromArray(remapped)
        out.SetSpacing(image.GetSpacing())  # the image's exact geometry (an image or a header reader)
        out.SetOrigin(image.GetOrigin())
        out.SetDirection(image.GetDirection())
        sitk.WriteImage(out, str(job.label_out), True)
    return []


def volume_jobs(cases: Sequence[Tuple[str, Path, Optional[Path], bool]], stage: Path,
                label_map: Union[Mapping[int, int], Callable[[str], Mapping[int, int]]],
                use_image_geometry: Sequence[str] = ()) -> List[VolumeCase]:
    """Build :class:`VolumeCase` jobs for ``(case_id, image, label, is_test)`` tuples into a staging folder.

    Training cases go to imagesTr/labelsTr, test cases to imagesTs/labelsTs (labels kept for evaluation).
    ``label_map`` is one map for all cases or a function of the case id. Labels of the cases in
    ``use_image_geometry`` are written with the image's geometry without a header check.
    """
    use_image = set(use_image_geometry)
    jobs = []
    for case_id, image, label, is_test in cases:
        images_dir, labels_dir = ("imagesTs", "labelsTs") if is_test else ("imagesTr", "labelsTr")
        lm = label_map(case_id) if callable(label_map) else label_map
        jobs.append(VolumeCase(
            case_id=case_id, image=image, label=label,
            image_out=stage / images_dir / f"{case_id}_0000.nii.gz",
            label_out=(stage / labels_dir / f"{case_id}.nii.gz") if label is not None else None,
            label_map=tuple(sorted((int(k), int(v)) for k, v in lm.items())),
            check_label_geometry=case_id not in use_image))
    return jobs


def flatten(problem_lists: Sequence[Sequence[str]]) -> List[str]:
    """Concatenate per-case problem lists, keeping case order."""
    return [p for problems in problem_lists for p in problems]

