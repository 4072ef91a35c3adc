"""The official KiTS21 evaluation: volumetric Dice and Surface Dice per Hierarchical Evaluation Class (HEC).

KiTS21 scores a case on three nested regions built from the labels (0 background, 1 kidney, 2 tumor, 3 cyst):
``kidney_and_mass`` = {1, 2, 3}, ``mass`` = {2, 3} and ``tumor`` = {2}. For each region it reports the volumetric
Dice and the Surface Dice at a region-specific tolerance in mm (DeepMind's surface-distance formulation:
surface elements ("surfels") are placed on the corners of the voxel grid by a marching-cubes style lookup table,
each surfel carries an area, and a surfel counts as overlapping when the closest surfel of the other surface is
at most the tolerance away). Both masks empty gives Dice 1 and SD 1; exactly one empty gives 0 and 0. When the
reference is the official set of sampled annotations, the case score is the plain mean over all sample files.

This module reproduces the official numbers (``neheller/kits21``, ``kits21/evaluation/metrics.py``) but computes
them faster:

* the surfel geometry (neighbour-code kernel and per-code surfel areas) comes from the ``surface-distance``
  package (``surface_distance.lookup_tables``), so the surface definition is the official one;
* the distance part is not a full Euclidean distance transform followed by a sort of every surfel: since only
  "closest distance <= tolerance" matters, each surfel of one surface looks up the few grid offsets that lie
  within the tolerance (distances computed with the same floating-point formula as SciPy's distance
  transform) in the other surface's border map;
* everything runs on the bounding box of prediction and reference (plus the tolerance margin), per region.

The ``surface-distance`` 0.1 release on PyPI is only used for its lookup tables: its ``compute_surface_distances``
still calls the ``scipy.ndimage.filters``/``morphology`` namespaces (removed in SciPy 2.0), crashes under
NumPy 2 when exactly one mask is empty (``np.Inf``) and sorts every surfel in Python.

Size: about 464 lines, as the official evaluation's folder logic (the three reference layouts, parallel scoring, the
JSON and CSV outputs) follows one official script.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import SimpleITK as sitk

from nnunet_transfer.data.convert_kits import case_folders, kits_case_roots, searched_folders_text
from nnunet_transfer.data.kits_samples import (
    INSTANCE_DIR,
    NUMBER_OF_GROUPS,
    SampledSegmentation,
    build_segmentation,
    has_instance_annotations,
    sample_segmentations,
)
from nnunet_transfer.data.nifti_integrity import check_nifti
from nnunet_transfer.errors import InvalidValueError, NotApplicableError
from nnunet_transfer.evaluation.kits_metrics import HECS, METRICS, as_label_array, kits_case_metrics

# official kits21 layout: data/case_XXXXX/{aggregated_MAJ_seg.nii.gz, segmentation_samples/group_*/*.nii.gz}
KITS21_MAJORITY_FILE = "aggregated_MAJ_seg.nii.gz"
KITS21_SAMPLES_DIR = "segmentation_samples"
KITS21_GROUP_PREFIX = "group"
KITS21_FILE_ENDING = ".nii.gz"

GT_MODE_LABELS = "labels_folder"
GT_MODE_SAMPLES = "kits21_samples"
GT_MODE_MAJORITY = "kits21_majority_vote"

# which reference an official kits21 data folder gives: samples when the case folders allow it, else the majority
REFERENCE_AUTO = "auto"
REFERENCE_SAMPLES = "samples"
REFERENCE_MAJORITY = "majority"
REFERENCE_CHOICES = (REFERENCE_AUTO, REFERENCE_SAMPLES, REFERENCE_MAJORITY)

# geometry agreement required between a prediction and its reference (NIfTI stores float32 headers)
_SPACING_ATOL_MM = 1e-3
_ORIGIN_ATOL_MM = 1e-3
_DIRECTION_ATOL = 1e-4
_MAX_LISTED = 20


@dataclass(frozen=True)
class _Geometry:
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]


def _read_label_image(path: Path) -> tuple[np.ndarray, _Geometry]:
    """Read a 3D label image; return its array (z, y, x order) and its geometry (SimpleITK x, y, z order)."""
    check_nifti(path)  # SimpleITK reads a truncated file without error, filling the rest with 0
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise NotApplicableError(f"could not read label image {path}: {err}") from err
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidValueError(
            f"{path}: expected a 3D single-channel label image, got dimension {image.GetDimension()} with "
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    return as_label_array(sitk.GetArrayFromImage(image), str(path)), _geometry_of(image)


def _geometry_of(image: sitk.Image) -> _Geometry:
    return _Geometry(
        size=tuple(image.GetSize()),
        spacing=tuple(image.GetSpacing()),
        origin=tuple(image.GetOrigin()),
        direction=tuple(image.GetDirection()),
    )


def _check_same_grid(pred_path: Path, pred: _Geometry, ref_name: str, ref: _Geometry, case_id: str) -> list[str]:
    """Raise if prediction and reference differ in size; return warnings for other geometry differences.

    Like the official ``compute_metrics_for_case`` only the array shapes must agree: a different spacing is
    reported (the prediction's spacing is used), and so are a different origin or direction.
    """
    if pred.size != ref.size:
        raise InvalidValueError(
            f"prediction {pred_path} (size {pred.size}) and reference {ref_name} (size {ref.size}, SimpleITK "
            f"x,y,z order) are not on the same voxel grid. Predictions must keep the geometry of the case's "
            f"imaging.nii.gz (nnU-Net's predictions do); check that the file belongs to this case and was not "
            f"resampled or reoriented."
        )
    warnings = []
    for what, a, b, atol in (("spacing", pred.spacing, ref.spacing, _SPACING_ATOL_MM),
                             ("origin", pred.origin, ref.origin, _ORIGIN_ATOL_MM),
                             ("direction", pred.direction, ref.direction, _DIRECTION_ATOL)):
        if not np.allclose(a, b, rtol=0, atol=atol):
            warnings.append(
                f"{case_id}: prediction {what} {tuple(round(v, 6) for v in a)} differs from reference {ref_name} "
                f"{what} {tuple(round(v, 6) for v in b)}" + (" (computed with the prediction's spacing, as the "
                                                               "official compute_metrics_for_case does)"
                                                               if what == "spacing" else ""))
    return warnings


def _read_reference(reference: Reference) -> tuple[np.ndarray, _Geometry, str]:
    """A reference label map: a label file, or a sample composed from instance annotations."""
    if isinstance(reference, SampledSegmentation):
        image = build_segmentation(reference)
        name = f"{reference.folder} sample group_{reference.group}/{reference.name}"
        return as_label_array(sitk.GetArrayFromImage(image), name), _geometry_of(image), name
    array, geometry = _read_label_image(reference)
    return array, geometry, str(reference)


def _evaluate_case(case_id: str, pred_path: Path, references: Sequence[Reference]
                   ) -> tuple[dict[str, dict[str, float]], list[str]]:
    """(metrics averaged over the references, geometry warnings) of one case."""
    if len(references) == 0:
        raise InvalidValueError(f"no reference files given for prediction {pred_path}")
    prediction, pred_geometry = _read_label_image(pred_path)
    per_reference, warnings = [], []
    for reference in references:
        ref_array, ref_geometry, ref_name = _read_reference(reference)
        for w in _check_same_grid(pred_path, pred_geometry, ref_name, ref_geometry, case_id):
            if w not in warnings:
                warnings.append(w)
        per_reference.append(kits_case_metrics(prediction, ref_array, pred_geometry.spacing[::-1]))
    return _mean_metrics(per_reference), warnings


def _mean_metrics(results: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {hec: {m: float(np.mean([r[hec][m] for r in results])) for m in METRICS} for hec in HECS}


# --------------------------------------------------------------------------------------------------------------
# reference layouts
# --------------------------------------------------------------------------------------------------------------


Reference = Union[Path, SampledSegmentation]


@dataclass(frozen=True)
class _ReferenceSet:
    mode: str  # one of GT_MODE_*
    root: Path
    files: dict[str, list[Reference]]  # case id -> references (a case's score is their mean)
    note: str = ""
    #: case id -> why this case cannot be scored in this mode (an error only if it has a prediction)
    unusable: dict[str, str] = field(default_factory=dict)


def _sample_files(case_dir: Path) -> list[Path]:
    """The official sampled annotations of a case: every .nii.gz in segmentation_samples/group*/ (sorted).

    Mirrors ``evaluate_predicted_file_on_samples`` of the official code: the aggregated files in the case
    folder are not among them.
    """
    samples_dir = case_dir / KITS21_SAMPLES_DIR
    if not samples_dir.is_dir():
        return []
    groups = sorted(p for p in samples_dir.iterdir() if p.is_dir() and p.name.startswith(KITS21_GROUP_PREFIX))
    return [f for g in groups for f in sorted(g.iterdir()) if f.is_file() and f.name.endswith(KITS21_FILE_ENDING)]


def _kits21_case_dirs(gt_dir: Path) -> tuple[Path, list[Path]] | None:
    """The first of :func:`kits_case_roots` (the converter's search order) that holds case folders."""
    for root in kits_case_roots(gt_dir):
        cases = case_folders(root)
        if cases:
            return root, cases
    return None


def _find_references(gt_dir: Path, file_ending: str, reference: str = REFERENCE_AUTO) -> _ReferenceSet:
    """Detect the reference layout: a flat folder of label files, or the official kits21 data folder."""
    if reference not in REFERENCE_CHOICES:
        raise InvalidValueError(f"reference must be one of {REFERENCE_CHOICES}, got {reference!r}")
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"reference folder {gt_dir} does not exist")
    label_files = sorted(p for p in gt_dir.iterdir() if p.is_file() and p.name.endswith(file_ending))
    official = _kits21_case_dirs(gt_dir)

    if label_files and official is not None:
        raise InvalidValueError(
            f"{gt_dir} holds both label files (*{file_ending}) and kits21 case folders ({official[0]}); "
            f"pass either a folder of label files named like the predictions or the kits21 data folder"
        )
    if label_files:
        if reference != REFERENCE_AUTO:
            raise InvalidValueError(f"{gt_dir} is a folder of label files; reference={reference!r} needs the kits21 "
                                    f"data folder (or a clone of the kits21 repository)")
        files: dict[str, list[Reference]] = {p.name[: -len(file_ending)]: [p] for p in label_files}
        return _ReferenceSet(GT_MODE_LABELS, gt_dir, files)
    if official is None:
        raise FileNotFoundError(
            f"no references found in {gt_dir}: expected label files named like the predictions "
            f"(e.g. case_00000{file_ending}, nnU-Net labelsTr style) or the official kits21 case folders "
            f"(case_XXXXX/ with {INSTANCE_DIR}/, {KITS21_MAJORITY_FILE} or {KITS21_SAMPLES_DIR}/) in "
            f"{searched_folders_text(kits_case_roots(gt_dir))}"
        )

    root, case_dirs = official
    on_disk = {c.name: _sample_files(c) for c in case_dirs}
    instances = {c.name for c in case_dirs if has_instance_annotations(c)}
    majority = {c.name: c / KITS21_MAJORITY_FILE for c in case_dirs if (c / KITS21_MAJORITY_FILE).is_file()}
    annotated = [c.name for c in case_dirs if on_disk[c.name] or c.name in instances or c.name in majority]
    if not annotated:
        raise FileNotFoundError(
            f"kits21 data folder {root} has case folders but none holds {INSTANCE_DIR}/ instance annotations, "
            f"{KITS21_MAJORITY_FILE} or {KITS21_SAMPLES_DIR}/group_*/*{KITS21_FILE_ENDING}"
        )
    skipped = len(case_dirs) - len(annotated)
    notes = [f"{skipped} case folders without annotations ignored"] if skipped else []
    can_sample = [c for c in annotated if on_disk[c] or c in instances]
    use_samples = reference == REFERENCE_SAMPLES or (reference == REFERENCE_AUTO and can_sample)
    if not use_samples:
        unusable = {c: f"no {KITS21_MAJORITY_FILE}" for c in annotated if c not in majority}
        notes.append(f"the majority vote {KITS21_MAJORITY_FILE} is the reference (official --use_maj_voting_as_gt; "
                     f"the official test-set evaluation uses the sampled segmentations)"
                     if reference == REFERENCE_MAJORITY else
                     f"no {INSTANCE_DIR}/ or {KITS21_SAMPLES_DIR}/ found, so the majority vote "
                     f"{KITS21_MAJORITY_FILE} is the reference (official --use_maj_voting_as_gt)")
        return _ReferenceSet(GT_MODE_MAJORITY, root, {c: [majority[c]] for c in annotated if c in majority},
                             "; ".join(notes), unusable)

    by_case = {c.name: c for c in case_dirs}
    files = {}
    sampling_problems = {}
    for c in can_sample:
        if on_disk[c]:
            files[c] = on_disk[c]
            continue
        try:
            files[c] = sample_segmentations(by_case[c], NUMBER_OF_GROUPS)
        except FileNotFoundError as err:  # an error only if the case is predicted
            sampling_problems[c] = str(err)
    generated = sum(1 for c in files if not on_disk[c])
    if generated:
        notes.append(f"{generated} cases sampled from their {INSTANCE_DIR}/ instance annotations "
                     f"({NUMBER_OF_GROUPS} groups, seeded with the case number, as the official "
                     f"sample_segmentations.py)")
    if len(files) - generated:
        notes.append(f"{len(files) - generated} cases read from {KITS21_SAMPLES_DIR}/")
    unusable = {c: sampling_problems.get(c, f"neither {INSTANCE_DIR}/ instance annotations nor {KITS21_SAMPLES_DIR}/")
                for c in annotated if c not in files}
    return _ReferenceSet(GT_MODE_SAMPLES, root, files, "; ".join(notes), unusable)


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


# --------------------------------------------------------------------------------------------------------------
# folder evaluation
# --------------------------------------------------------------------------------------------------------------


def evaluate_kits21(
    pred_dir: str | Path,
    gt_dir: str | Path,
    output_json: str | Path | None = None,
    output_csv: str | Path | None = None,
    num_workers: int = 1,
    file_ending: str = ".nii.gz",
    require_all: bool = False,
    reference: str = REFERENCE_AUTO,
) -> dict:
    """Evaluate a folder of KiTS21 predictions (``case_XXXXX<file_ending>``) against references.

    ``gt_dir`` is either a folder of label files named like the predictions (nnU-Net ``labelsTr`` style) or the
    official kits21 case folders (``kits21/data`` of a clone, or the clone itself: the folders of
    :func:`~nnunet_transfer.data.convert_kits.kits_case_roots` are searched). In the official layout the sampled
    segmentations are the reference and a case's score is their mean: read from ``segmentation_samples/group*/``
    where the official sampler wrote them, otherwise built from the case's ``segmentations/`` instance
    annotations exactly as that sampler does (:mod:`nnunet_transfer.data.kits_samples`); with neither, or with
    ``reference="majority"``, ``aggregated_MAJ_seg.nii.gz`` is used. The mode is printed and stored as
    ``"gt_mode"``.

    Like the official evaluation, the predictions given are scored: reference cases without a prediction (one
    fold, a subset such as the MOTS overlap) are listed in ``"missing_predictions"`` and printed, and are an
    error only with ``require_all``. A prediction without a reference is an error. Metrics use the prediction's
    spacing; geometry differences other than size are warnings naming the case (``"warnings"``).
    ``num_workers > 1`` evaluates cases in spawned processes (like nnU-Net's evaluation), so a calling script
    must run it under ``if __name__ == "__main__":``.

    Returns ``{"gt_mode", "num_cases", "num_reference_cases", "missing_predictions", "warnings", "mean": {hec:
    {"dice", "surface_dice"}}, "per_case": {case_id: {hec: {"dice", "surface_dice"}}}}`` with cases sorted by
    id; optionally writes it as JSON and a per-case CSV.
    """
    if not isinstance(num_workers, int) or num_workers < 1:
        raise InvalidValueError(f"num_workers must be a positive integer, got {num_workers!r}")
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {pred_dir} does not exist")
    references = _find_references(Path(gt_dir), file_ending, reference)
    predictions = {
        p.name[: -len(file_ending)]: p
        for p in sorted(pred_dir.iterdir())
        if p.is_file() and p.name.endswith(file_ending)
    }
    if not predictions:
        raise FileNotFoundError(f"no predictions (<case_id>{file_ending}) in {pred_dir}")
    unusable = sorted(c for c in predictions if c in references.unusable)
    if unusable:
        raise FileNotFoundError(
            f"{len(unusable)} predicted cases have no usable reference in mode '{references.mode}' in "
            f"{references.root}: " + "; ".join(f"{c}: {references.unusable[c]}" for c in unusable[:_MAX_LISTED])
            + (". Pass --use-maj-voting-as-gt (reference='majority') to score against the majority vote."
               if references.mode == GT_MODE_SAMPLES else "."))
    unexpected = sorted(set(predictions) - set(references.files))
    if unexpected:
        raise FileNotFoundError(
            f"{len(unexpected)} predictions in {pred_dir} have no reference in {references.root}: "
            f"{_listing(unexpected)}. Remove them or evaluate against a reference folder that holds these cases."
        )
    missing = sorted(set(references.files) - set(predictions))
    if missing and require_all:
        raise FileNotFoundError(
            f"{len(missing)} of {len(references.files)} reference cases in {references.root} have no prediction "
            f"in {pred_dir} (expected <case_id>{file_ending}): {_listing(missing)}. Predict them, or leave out "
            f"--require-all (require_all) to score only the cases predicted."
        )

    case_ids = sorted(predictions)
    print(
        f"KiTS21 evaluation: {len(case_ids)} of {len(references.files)} reference cases, reference mode "
        f"'{references.mode}' ({references.root})" + (f"; {references.note}" if references.note else ""),
        flush=True,
    )
    if missing:
        print(f"KiTS21 evaluation: {len(missing)} reference cases have no prediction in {pred_dir} and are not "
              f"scored: {_listing(missing)}", flush=True)
    jobs = {c: (predictions[c], references.files[c]) for c in case_ids}
    per_case_unordered = _run_cases(jobs, num_workers)
    per_case = {c: per_case_unordered[c][0] for c in case_ids}
    warnings = [w for c in case_ids for w in per_case_unordered[c][1]]
    for w in warnings:
        print(f"WARNING: {w}", flush=True)
    results = {
        "gt_mode": references.mode,
        "num_cases": len(case_ids),
        "num_reference_cases": len(references.files),
        "missing_predictions": missing,
        "warnings": warnings,
        "mean": _mean_metrics(list(per_case.values())),
        "per_case": per_case,
    }
    if output_json is not None:
        _write_json(results, Path(output_json))
    if output_csv is not None:
        _write_csv(per_case, Path(output_csv))
    return results


CaseResult = tuple[dict[str, dict[str, float]], list[str]]


def _run_cases(jobs: dict[str, tuple[Path, list[Reference]]], num_workers: int) -> dict[str, CaseResult]:
    """Evaluate every case (in worker processes if num_workers > 1) with a progress counter: about 20 lines
    however many cases, each with the time elapsed and an estimate of the time left."""
    total = len(jobs)
    done: dict[str, CaseResult] = {}
    every = max(1, math.ceil(total / 20))
    started = time.perf_counter()

    def report(case_id: str) -> None:
        if len(done) % every and len(done) != total:
            return
        elapsed = time.perf_counter() - started
        left = elapsed / len(done) * (total - len(done))
        print(f"KiTS21 evaluation: {len(done)}/{total} cases done ({case_id}), {elapsed:.1f} s elapsed"
              + (f", about {left:.0f} s left" if len(done) < total else ""), flush=True)

    if num_workers == 1 or total == 1:
        for case_id, (pred_path, refs) in jobs.items():
            done[case_id] = _evaluate_case(case_id, pred_path, refs)
            report(case_id)
        return done

    # spawn (like nnU-Net's own evaluation): safe even if the caller has threads (torch) running
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(num_workers, total), mp_context=context) as pool:
        futures = {pool.submit(_evaluate_case, c, p, r): c for c, (p, r) in jobs.items()}
        pending = set(futures)
        while pending:  # FIRST_COMPLETED: report each case as it finishes (FIRST_EXCEPTION waits for all of them)
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()  # type: ignore[misc]
                done[futures[future]] = future.result()
                report(futures[future])
    return done


def _write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")


def _write_csv(per_case: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """One row per case: case_id, then <hec>_dice and <hec>_surface_dice for each HEC."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [f"{hec}_{m}" for hec in HECS for m in METRICS]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", *columns])
        for case_id, metrics in per_case.items():
            writer.writerow([case_id, *(repr(metrics[hec][m]) for hec in HECS for m in METRICS)])


def format_table(results: dict) -> str:
    """Human-readable table of the per-HEC mean Dice and Surface Dice (plus their average over HECs)."""
    mean = results["mean"]
    header = f"KiTS21 evaluation: {results.get('num_cases', len(results.get('per_case', {})))} cases"
    if results.get("missing_predictions"):
        header += f" ({len(results['missing_predictions'])} reference cases without prediction not scored)"
    if "gt_mode" in results:
        header += f", reference mode '{results['gt_mode']}'"
    name_width = max(len(h) for h in [*HECS, "average"])
    lines = [header, f"{'HEC':<{name_width}}  {'Dice':>8}  {'Surface Dice':>12}"]
    for hec in HECS:
        lines.append(f"{hec:<{name_width}}  {mean[hec]['dice']:>8.4f}  {mean[hec]['surface_dice']:>12.4f}")
    avg_dice = float(np.mean([mean[h]["dice"] for h in HECS]))
    avg_sd = float(np.mean([mean[h]["surface_dice"] for h in HECS]))
    lines.append(f"{'average':<{name_width}}  {avg_dice:>8.4f}  {avg_sd:>12.4f}")
    return "\n".join(lines)

