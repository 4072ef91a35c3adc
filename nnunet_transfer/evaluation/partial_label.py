"""Per-task evaluation of a multi-task (MOTS) prediction folder against partially labelled references.

nnU-Net's own validation scores every region on every case. For partially labelled data that is wrong: a kidney
scan's liver is unlabelled (stored as background), so a correct liver prediction there would count as a false
positive. Here each case is scored only on the organ and tumor channels of its own task.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from nnunet_transfer.data.mots_tasks import OUTPUT_CHANNELS, TASKS
from nnunet_transfer.data.nifti_integrity import check_nifti
from nnunet_transfer.errors import MissingEntryError, NnUNetTransferError

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


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Volumetric Dice; NaN when both masks are empty (the channel has nothing to score on this case)."""
    denom = pred.sum() + ref.sum()
    return float("nan") if denom == 0 else float(2.0 * np.logical_and(pred, ref).sum() / denom)


def evaluate_partial_label_folder(pred_dir: str | Path, gt_dir: str | Path, case_to_task: Mapping[str, int],
                                  file_ending: str = ".nii.gz",
                                  output_json: Optional[str | Path] = None,
                                  expected_cases: Optional[Iterable[str]] = None) -> Dict[str, dict]:
    """Dice of each case's own task channels, per case and averaged per channel.

    Returns ``{"per_case": {case: {channel_name: dice}}, "mean": {channel_name: mean dice},
    "missing_predictions": [case, ...]}``. Predictions without a reference or without a known task raise (naming
    the case and the fix), as do files that are truncated or hold label values no MOTS task has; references
    without a prediction are listed (and warned about on stderr), since scoring a subset (one fold's validation
    cases) is legitimate but must not go unnoticed. ``expected_cases``: the cases that should have a prediction
    (default: every reference case with a task).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    predictions = sorted(p for p in pred_dir.iterdir() if p.name.endswith(file_ending))
    if not predictions:
        raise FileNotFoundError(f"no predictions ending in {file_ending} in {pred_dir}")
    per_case: Dict[str, Dict[str, float]] = {}
    for pred_file in predictions:
        case = pred_file.name[: -len(file_ending)]
        if case not in case_to_task:
            raise MissingEntryError(f"case {case!r} ({pred_file}) has no task in the dataset's case_to_task map; "
                                    "was the dataset converted with `nnunet-transfer convert mots`?")
        gt_file = gt_dir / pred_file.name
        if not gt_file.is_file():
            raise FileNotFoundError(f"reference {gt_file} for prediction {pred_file} does not exist")
        pred = _read_labels(pred_file)
        ref = _read_labels(gt_file)
        if pred.shape != ref.shape:
            raise ValueError(f"prediction {pred_file} has shape {pred.shape}, reference {gt_file} {ref.shape}")
        task = case_to_task[case]
        per_case[case] = {ch.name: _dice(np.isin(pred, ch.region), np.isin(ref, ch.region))
                          for ch in OUTPUT_CHANNELS if ch.task == task}
    if expected_cases is None:
        expected_cases = [g.name[: -len(file_ending)] for g in gt_dir.iterdir() if g.name.endswith(file_ending)]
    missing = sorted(c for c in set(expected_cases) if c in case_to_task and c not in per_case)
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... (+{len(missing) - 10})" if len(missing) > 10 else "")
        print(f"WARNING: {len(missing)} reference case(s) in {gt_dir} have no prediction in {pred_dir} and are not "
              f"scored ({len(per_case)} scored): {shown}", file=sys.stderr)
    mean = {}
    for ch in OUTPUT_CHANNELS:
        values = [v[ch.name] for v in per_case.values() if ch.name in v and not np.isnan(v[ch.name])]
        mean[ch.name] = float(np.mean(values)) if values else float("nan")
    result = {"per_case": per_case, "mean": mean, "missing_predictions": missing}
    if output_json is not None:
        Path(output_json).write_text(json.dumps(result, indent=2, allow_nan=True))
    return result


def format_task_table(mean: Mapping[str, float]) -> str:
    """Two-column table (organ, tumor Dice) with one row per task."""
    lines = [f"{'task':<16}{'organ':>8}{'tumor':>8}"]
    for task in TASKS:
        cells = []
        for name in (task.organ_name, task.tumor_name):
            value = mean.get(name) if name else None
            cells.append("     -  " if value is None or np.isnan(value) else f"{value:8.4f}")
        lines.append(f"{task.name:<16}{''.join(cells)}")
    return "\n".join(lines)
