"""KiTS19 / KiTS21 / KiTS23 (official layouts) -> nnU-Net v2 raw dataset.

Layouts (auto-detected from the folder given):

* KiTS21: a clone of the ``neheller/kits21`` repository keeps its cases in ``ROOT/kits21/data/case_XXXXX/``
  (``kits21/configuration/paths.py``: ``TRAINING_DIR``); each case holds ``imaging.nii.gz`` (after the
  repository's ``get_imaging`` script ran) + ``aggregated_MAJ_seg.nii.gz`` (majority-vote label, the one
  converted; ``segmentations/`` and ``segmentation_samples/`` are left alone), labels 0 background, 1 kidney,
  2 tumor, 3 cyst. ``ROOT/data/case_XXXXX/`` (older releases, or ``ROOT`` = the clone's inner ``kits21/``) works too.
* KiTS19: ``ROOT/data/case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``, labels 0..2 (no cyst, so the
  dataset.json lists only 0..2). Cases 210..299 are the unlabelled KiTS19 test cases: they go to imagesTs.
* KiTS23: ``ROOT/dataset/case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``, labels 0..3.

``ROOT`` may also be the folder that holds the ``case_*`` folders itself; :func:`kits_case_roots` lists the
folders searched, in order. KiTS19 volumes have their axes in an
unusual order (slices first); the geometry is kept exactly as SimpleITK reads it, nnU-Net handles it, and the
converter only checks that image and label agree.

MOTS overlap: DoDNet's MOTS kidney task is KiTS19's 210 labelled cases, ``case_00000``..``case_00209``; KiTS21
and KiTS23 keep those ids. A model pretrained on MOTS has seen them, so a fair KiTS evaluation after MOTS
pretraining may exclude them (``exclude_mots_overlap``) or study them alone (``only_mots_overlap``). The
overlapping ids present in the converted dataset are recorded in dataset.json under
``nnunet_transfer.mots_overlap``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from nnunet_transfer.data.errors import ConversionError, raise_if_problems
from nnunet_transfer.data.mots_tasks import DATASET_JSON_KEY
from nnunet_transfer.data.raw_dataset import (NIFTI_ENDINGS, check_case_geometries, convert_volume_case, flatten,
                                              relative_posix, run_cases, staged_dataset, target_dataset_folder,
                                              volume_jobs, warn_identity_affines, write_dataset_json)

PathLike = Union[str, Path]

#: KiTS19's labelled training cases are case_00000..case_00209 (= DoDNet's MOTS kidney task)
KITS19_LABELLED_CASES = 210
LAYOUTS = ("kits19", "kits21", "kits23")
LABEL_STEMS = {"kits19": "segmentation", "kits21": "aggregated_MAJ_seg", "kits23": "segmentation"}
LABELS: Dict[str, Dict[str, int]] = {
    "kits19": {"background": 0, "kidney": 1, "tumor": 2},
    "kits21": {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3},
    "kits23": {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3},
}
_CASE_DIR = re.compile(r"^case_(\d+)$")
_IMAGING_HINT = ("the KiTS repositories ship labels only; download the images with the repository's "
                 "get_imaging script")


@dataclass(frozen=True)
class KitsCase:
    """One ``case_XXXXX`` folder: its number, image and label file (None where missing), missing-file problems."""

    case_id: str
    number: int
    folder: Path
    image: Optional[Path]
    label: Optional[Path]
    problems: Tuple[str, ...] = ()


def _existing_nifti(folder: Path, stem: str) -> Optional[Path]:
    for ending in NIFTI_ENDINGS:
        candidate = folder / f"{stem}{ending}"
        if candidate.is_file():
            return candidate
    return None


def case_folders(root: Path) -> List[Path]:
    """``case_*`` folders directly inside ``root``, sorted by case number."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in root.iterdir() if d.is_dir() and (m := _CASE_DIR.match(d.name))]
    return [d for _, d in sorted(found, key=lambda t: (t[0], t[1].name))]


def kits_case_roots(source: PathLike) -> List[Path]:
    """The folders that may hold a KiTS download's ``case_*`` folders, in the order they are searched.

    ``SOURCE/dataset`` (KiTS23), ``SOURCE/data`` (KiTS19, KiTS21 releases, the clone's inner ``kits21/``),
    ``SOURCE/kits21/data`` (a KiTS21 git clone: ``kits21/configuration/paths.py``) and ``SOURCE`` itself.
    """
    source = Path(source)
    return [source / "dataset", source / "data", source / "kits21" / "data", source]


def searched_folders_text(roots: Sequence[Path]) -> str:
    """``a, b or c`` for an error message that says exactly where case folders were looked for."""
    names = [str(r) for r in roots]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def detect_kits_layout(source: PathLike) -> Tuple[str, Path]:
    """(layout, folder holding the case folders) for a KiTS download; :class:`ConversionError` if none found."""
    source = Path(source)
    if not source.is_dir():
        raise ConversionError(f"KiTS source folder {source} does not exist")
    roots = kits_case_roots(source)
    for root in roots:
        dirs = case_folders(root)
        if not dirs:
            continue
        if any(_existing_nifti(d, LABEL_STEMS["kits21"]) is not None for d in dirs):
            return "kits21", root
        if root.name == "dataset":
            return "kits23", root
        return "kits19", root
    raise ConversionError(
        f"no KiTS case folders (case_XXXXX/) found in {searched_folders_text(roots)}. Pass the folder of a "
        f"KiTS21 git clone (cases in kits21/data/), a KiTS19 clone or download (data/), a KiTS23 clone "
        f"(dataset/), or the folder holding the case_XXXXX/ folders.")


def scan_kits_cases(root: Path, label_stem: str, unlabelled_ok: bool) -> List[KitsCase]:
    """Find image and label of every case folder in ``root``; missing files become the case's problems.

    With ``unlabelled_ok`` a KiTS19 test case (number >= 210) without a label is fine (``label=None``).
    """
    cases: List[KitsCase] = []
    for folder in case_folders(root):
        number = int(_CASE_DIR.match(folder.name).group(1))
        image = _existing_nifti(folder, "imaging")
        label = _existing_nifti(folder, label_stem)
        problems = []
        if image is None:
            problems.append(f"image {folder / 'imaging.nii.gz'} is missing ({_IMAGING_HINT})")
        if label is None and not (unlabelled_ok and number >= KITS19_LABELLED_CASES):
            problems.append(f"label {folder / (label_stem + '.nii.gz')} is missing for case {folder.name}")
        cases.append(KitsCase(folder.name, number, folder, image, label, tuple(problems)))
    return cases


def list_mots_overlap(source: PathLike) -> List[str]:
    """KiTS case ids in ``source`` that are also in MOTS (KiTS19 labelled cases case_00000..case_00209)."""
    _, root = detect_kits_layout(source)
    return [d.name for d in case_folders(root) if int(_CASE_DIR.match(d.name).group(1)) < KITS19_LABELLED_CASES]


def convert_kits(source: PathLike, dataset_id: int, name: str = "KiTS21", exclude_mots_overlap: bool = False,
                 only_mots_overlap: bool = False, num_workers: int = 1, geometry_mismatch: str = "error",
                 force: bool = False) -> Path:
    """Convert a KiTS19/21/23 download (layout auto-detected) into ``$nnUNet_raw/DatasetXXX_Name``.

    Labelled cases go to imagesTr/labelsTr (``case_XXXXX_0000.nii.gz`` / ``case_XXXXX.nii.gz``), unlabelled
    KiTS19 test cases to imagesTs. All cases are checked first (readable files, 3D volumes, allowed label values,
    image/label geometry); every problem found is reported in one :class:`ConversionError` and nothing is
    written. ``geometry_mismatch`` (``error``, ``use-image``, ``skip``) as in
    :func:`~nnunet_transfer.data.convert_mots.convert_mots`; ``force`` as there. Returns the dataset folder.
    """
    if exclude_mots_overlap and only_mots_overlap:
        raise ConversionError("exclude_mots_overlap and only_mots_overlap exclude each other: choose one")
    source = Path(source)
    target = target_dataset_folder(dataset_id, name, force)
    layout, root = detect_kits_layout(source)
    cases = scan_kits_cases(root, LABEL_STEMS[layout], unlabelled_ok=(layout == "kits19"))
    overlap = {c.case_id for c in cases if c.number < KITS19_LABELLED_CASES}
    if exclude_mots_overlap:
        cases = [c for c in cases if c.case_id not in overlap]
    elif only_mots_overlap:
        cases = [c for c in cases if c.case_id in overlap]
    problems = [p for c in cases for p in c.problems]
    if not cases:
        problems.append(f"no cases left to convert in {root}" + (" after the MOTS-overlap selection"
                                                                 if exclude_mots_overlap or only_mots_overlap else ""))
    cases = [c for c in cases if not c.problems]
    geometry = check_case_geometries([(c.case_id, c.image, c.label) for c in cases], geometry_mismatch)
    cases = [c for c in cases if c.case_id not in set(geometry.skipped)]
    warn_identity_affines(geometry.identity_affine, "KiTS")
    train = [c for c in cases if c.label is not None]
    test = [c for c in cases if c.label is None]
    print(f"KiTS ({layout}) in {root}: {len(train)} labelled and {len(test)} unlabelled cases", flush=True)

    labels = LABELS[layout]
    label_map = {v: v for v in labels.values() if v != 0}
    with staged_dataset(target, force) as stage:
        jobs = volume_jobs([(c.case_id, c.image, c.label, c.label is None) for c in train + test], stage, label_map,
                           geometry.use_image_geometry)
        problems += flatten(run_cases(convert_volume_case, jobs, num_workers, title=target.name))
        raise_if_problems(problems, f"converting {source} to {target.name} failed, nothing was written")
        write_dataset_json(
            stage, {0: "CT"}, labels, len(train), ".nii.gz", dataset_name=target.name,
            description=f"{layout.upper()} converted by nnunet-transfer from {source}",
            reference="https://kits-challenge.org",
            license="see the KiTS challenge data licence (CC BY-NC-SA 4.0)",
            **{DATASET_JSON_KEY: {
                "kind": "kits",
                "layout": layout,
                "selection": ("exclude_mots_overlap" if exclude_mots_overlap else
                              "only_mots_overlap" if only_mots_overlap else "all"),
                "mots_overlap": sorted(c.case_id for c in train + test if c.case_id in overlap),
                "test_cases": [c.case_id for c in test],
                "source_case": {c.case_id: relative_posix(c.image, source) for c in train + test},
                "geometry_mismatch": geometry.to_json(),
            }})
    for line in geometry.summary_lines():
        print(f"KiTS {line}", flush=True)
    return target
