"""Per-task evaluation of a multi-task (MOTS) prediction folder against partially labelled references.

nnU-Net's own validation scores every region on every case. For partially labelled data that is wrong: a kidney
scan's liver is unlabelled (stored as background), so a correct liver prediction there would count as a false
positive. Here each case is scored only on the organ and tumor channels of its own task.

The prediction of a case must be its own task's label map, as DoDNet scores it: the trainer's final validation
writes such maps (each case predicted with its own task's head), and so does ``nnunet-transfer predict-tasks``
(``OUT/<task>/<case>.nii.gz``, a folder per task; that layout is detected here). A map written by stock all-task
inference (``nnUNetv2_predict``) is the *merged* map, in which a later region overwrites an earlier one in
``regions_class_order`` (liver, liver tumour, kidney, kidney tumour, hepatic vessel, hepatic-vessel tumour,
pancreas, pancreas tumour, colon tumour, lung tumour, spleen), so a liver case's tumour can be lost to a firing
hepatic-vessel-tumour head; score such predictions only knowing that.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_transfer.data.mots_tasks import OUTPUT_CHANNELS, TASKS
from nnunet_transfer.data.nifti_integrity import check_nifti
from nnunet_transfer.errors import InvalidValueError, MissingEntryError, NnUNetTransferError
from nnunet_transfer.evaluation.dodnet import dice, dodnet_postprocess, hd95

CONVENTIONS = ("ours", "dodnet")
POSTPROCESSING = (None, "dodnet")

#: label values a MOTS prediction or reference may hold: background and the unified labels of all tasks
ALLOWED_LABELS = frozenset({0, *(v for t in TASKS for v in t.label_map.values())})


def _read_labels(path: Path) -> np.ndarray:
    """A label map, checked to be complete and to hold only MOTS label values."""
    check_nifti(path)
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    unknown = sorted(set(np.unique(arr).tolist()) - ALLOWED_LABELS)
    if unknown:
        raise NnUNetTransferError(f"{path} holds label values {unknown[:10]} that no MOTS task has (allowed: "
                                  f"{sorted(ALLOWED_LABELS)})", file=path,
                                  fix="predict with the MOTS model (nnUNetv2_predict writes the unified labels)")
    return arr


def _prediction_files(pred_dir: Path, case_to_task: Mapping[str, int], file_ending: str
                      ) -> Tuple[str, Dict[str, Path]]:
    """(layout, case -> prediction file): ``per_task_folders`` (predict-tasks output) or ``flat``."""
    task_dirs = {t.index: pred_dir / t.name for t in TASKS if (pred_dir / t.name).is_dir()}
    if task_dirs:
        files = {}
        for task, folder in task_dirs.items():
            for p in sorted(folder.iterdir()):
                case = p.name[: -len(file_ending)] if p.name.endswith(file_ending) else None
                if case is not None and case_to_task.get(case) == task:  # a case is scored on its own task
                    files[case] = p
        return "per_task_folders", files
    files = {}
    for p in sorted(pred_dir.iterdir()):
        if p.is_file() and p.name.endswith(file_ending):
            case = p.name[: -len(file_ending)]
            if case not in case_to_task:
                raise MissingEntryError(f"case {case!r} ({p}) has no task in the dataset's case_to_task map; was "
                                        "the dataset converted with `nnunet-transfer convert mots`?")
            files[case] = p
    return "flat", files


def own_task_masks(label_map: np.ndarray, task_index: int) -> Dict[str, Optional[np.ndarray]]:
    """Channel name -> mask of a task's organ and tumour regions in a unified label map (None: no such channel)."""
    return {ch.name: np.isin(label_map, ch.region) for ch in OUTPUT_CHANNELS if ch.task == task_index}


def _postprocessed(masks: Dict[str, np.ndarray], task_index: int) -> Dict[str, np.ndarray]:
    task = TASKS[task_index]
    organ, tumour = dodnet_postprocess(task_index, masks.get(task.organ_name), masks.get(task.tumor_name))
    out = dict(masks)
    if task.organ_name in out:
        out[task.organ_name] = organ
    if task.tumor_name in out:
        out[task.tumor_name] = tumour
    return out


def evaluate_partial_label_folder(pred_dir: str | Path, gt_dir: str | Path, case_to_task: Mapping[str, int],
                                  file_ending: str = ".nii.gz",
                                  output_json: Optional[str | Path] = None, with_hd95: bool = False,
                                  convention: str = "ours", postprocessing: Optional[str] = None,
                                  expected_cases: Optional[Iterable[str]] = None) -> Dict[str, dict]:
    """Dice (and HD95) of each case's own task channels, per case and averaged per channel.

    ``pred_dir`` is a flat folder of per-case label maps or predict-tasks' folder per task. ``convention``:
    ``"ours"`` (Dice NaN when both masks are empty, HD95 in mm NaN when one is; NaNs are left out of the means)
    or ``"dodnet"`` (DoDNet's ``postp.py``: Dice with +1 in the denominator, HD95 0 / 373.12866 for empty
    masks; every case counts). ``postprocessing="dodnet"`` applies DoDNet's per-task post-processing first.

    Returns ``{"layout", "convention", "postprocessing", "per_case": {case: {channel: dice}}, "mean":
    {channel: mean dice}, "missing_predictions": [case, ...]}`` plus ``"hd95_per_case"`` and ``"hd95_mean"`` with
    ``with_hd95``. Predictions without a reference or without a known task raise (naming the case and the fix), as
    do files that are truncated or hold label values no MOTS task has; references without a prediction are listed
    (and warned about on stderr), since scoring a subset (one fold's validation cases) is legitimate but must not go
    unnoticed. ``expected_cases``: the cases that should have a prediction (default: every reference case with a
    task).
    """
    if convention not in CONVENTIONS:
        raise InvalidValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if postprocessing not in POSTPROCESSING:
        raise InvalidValueError(f"postprocessing must be one of {POSTPROCESSING}, got {postprocessing!r}")
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {pred_dir} does not exist")
    layout, predictions = _prediction_files(pred_dir, case_to_task, file_ending)
    if not predictions:
        raise FileNotFoundError(f"no predictions ending in {file_ending} in {pred_dir}"
                                + (" (per-task folders: none holds a case of its own task)"
                                   if layout == "per_task_folders" else ""))
    per_case: Dict[str, Dict[str, float]] = {}
    hd95_per_case: Dict[str, Dict[str, float]] = {}
    merged_maps = []
    for case, pred_file in sorted(predictions.items()):
        gt_file = gt_dir / f"{case}{file_ending}"
        if not gt_file.is_file():
            raise FileNotFoundError(f"reference {gt_file} for prediction {pred_file} does not exist")
        ref_image = sitk.ReadImage(str(gt_file))
        pred = _read_labels(pred_file)
        ref = _read_labels(gt_file)
        if pred.shape != ref.shape:
            raise InvalidValueError(f"prediction {pred_file} has shape {pred.shape}, reference {gt_file} {ref.shape}")
        task = case_to_task[case]
        if np.setdiff1d(np.unique(pred), [0, *TASKS[task].label_map.values()]).size:
            merged_maps.append(case)
        pred_masks, ref_masks = own_task_masks(pred, task), own_task_masks(ref, task)
        if postprocessing == "dodnet":
            pred_masks = _postprocessed(pred_masks, task)
        per_case[case] = {name: dice(pred_masks[name], ref_masks[name], convention) for name in ref_masks}
        if with_hd95:
            spacing = ref_image.GetSpacing()[::-1]
            hd95_per_case[case] = {name: hd95(pred_masks[name], ref_masks[name], spacing, convention)
                                   for name in ref_masks}
    warnings = []
    if merged_maps:
        warnings.append(f"{len(merged_maps)} predictions hold labels of other tasks ({', '.join(merged_maps[:10])}"
                        f"{', ...' if len(merged_maps) > 10 else ''}): merged all-task maps, in which other tasks' "
                        f"regions may have overwritten the case's own structures; predict with `nnunet-transfer "
                        f"predict-tasks` to score each task's own head")
        print(f"WARNING: {warnings[-1]}", flush=True)
    if expected_cases is None:
        expected_cases = [g.name[: -len(file_ending)] for g in gt_dir.iterdir() if g.name.endswith(file_ending)]
    missing = sorted(c for c in set(expected_cases) if c in case_to_task and c not in per_case)
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... (+{len(missing) - 10})" if len(missing) > 10 else "")
        print(f"WARNING: {len(missing)} reference case(s) in {gt_dir} have no prediction in {pred_dir} and are not "
              f"scored ({len(per_case)} scored): {shown}", file=sys.stderr)
    result: Dict[str, object] = {"layout": layout, "convention": convention, "postprocessing": postprocessing,
                                 "warnings": warnings, "per_case": per_case, "mean": _channel_means(per_case),
                                 "missing_predictions": missing}
    if with_hd95:
        result["hd95_per_case"] = hd95_per_case
        result["hd95_mean"] = _channel_means(hd95_per_case)
    if output_json is not None:
        Path(output_json).write_text(json.dumps(result, indent=2, allow_nan=True))
    return result  # type: ignore[return-value]


def _channel_means(per_case: Mapping[str, Mapping[str, float]]) -> Dict[str, float]:
    mean = {}
    for ch in OUTPUT_CHANNELS:
        values = [v[ch.name] for v in per_case.values() if ch.name in v and not np.isnan(v[ch.name])]
        mean[ch.name] = float(np.mean(values)) if values else float("nan")
    return mean


def format_task_table(mean: Mapping[str, float], title: str = "") -> str:
    """Two-column table (organ, tumor value) with one row per task."""
    lines = ([title] if title else []) + [f"{'task':<16}{'organ':>8}{'tumor':>8}"]
    for task in TASKS:
        cells = []
        for name in (task.organ_name, task.tumor_name):
            value = mean.get(name) if name else None
            cells.append("     -  " if value is None or np.isnan(value) else f"{value:8.4f}")
        lines.append(f"{task.name:<16}{''.join(cells)}")
    return "\n".join(lines)
