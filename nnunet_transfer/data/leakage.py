"""Leakage between pretraining and fine-tuning: target validation cases whose images the source was trained on.

A model pretrained on a dataset that shares scans with the fine-tuning dataset (MOTS contains the 210 KiTS19 cases
of KiTS21) has seen those scans; validating the fine-tuning on them inflates the transfer gain. This module

* finds the overlapping cases by **image content**: every image of the source's ``imagesTr`` against every image of
  the target's validation folds. Names and file bytes do not matter (renamed cases, other compression, another
  file format of the same voxels are found): an image is read, put in a canonical orientation (LPS for 3D), cast to
  float32, and hashed together with its shape. A cheap key read from the header alone (the sorted image size and
  the number of components) prefilters: only images whose key occurs on both sides are read;
* writes a ``splits_final.json`` for the target in which the overlapping cases are only ever training cases (of the
  given splits, or of nnU-Net's default 5 folds computed with nnU-Net's own split function), and
* keeps a record of the overlap next to the target's splits (:data:`RECORD_FILE`), which fine-tuning trainers read
  at the start of a run to warn when the fold they validate on holds overlapping cases (no re-scan of the images).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from nnunet_transfer.discovery import nnunet_folder
from nnunet_transfer.utils.atomic import write_atomically

#: written next to the target's splits_final.json: which target cases share images with which source cases
RECORD_FILE = "leakage_record.json"
SPLITS_FILE = "splits_final.json"
#: nnU-Net's default cross-validation (nnUNetTrainer.do_split)
DEFAULT_FOLDS, DEFAULT_SPLIT_SEED = 5, 12345

Splits = List[Dict[str, List[str]]]


@dataclass
class Overlap:
    """Target cases whose images occur among the source's training images."""

    source: str
    target: str
    #: target case -> source cases with an identical image
    pairs: Dict[str, List[str]] = field(default_factory=dict)
    #: target case -> folds that validate on it (filled by :func:`check_leakage`)
    validated_in: Dict[str, List[int]] = field(default_factory=dict)

    @property
    def leaking(self) -> Dict[str, List[int]]:
        """Overlapping target cases that some fold validates on."""
        return {case: folds for case, folds in self.validated_in.items() if folds}


# ---------------------------------------------------------------------------------------------------- image content


def _header_key(path: Path) -> Tuple:
    """Sorted image size and pixel components, from the header only (equal images have equal keys)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return tuple(sorted(reader.GetSize())), reader.GetNumberOfComponents()


def image_content_hash(path: Path) -> str:
    """sha256 of an image's voxels in canonical orientation (LPS for 3D) as float32, with their shape."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if image.GetDimension() == 3:
        image = sitk.DICOMOrient(image, "LPS")
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image), dtype=np.float32)
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _case_images(raw_dataset: Path) -> Dict[str, List[Path]]:
    """case id -> its image files (every channel), as nnU-Net lists a raw dataset's training cases."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    dataset_json = json.loads((raw_dataset / "dataset.json").read_text())
    cases = get_filenames_of_train_images_and_targets(str(raw_dataset), dataset_json)
    return {str(case): [Path(p) for p in entry["images"]] for case, entry in cases.items()}


def find_overlap(source_cases: Dict[str, List[Path]], target_cases: Dict[str, List[Path]],
                 source: str = "source", target: str = "target") -> Overlap:
    """Pairs (target case, source case) sharing an image (any channel); header keys prefilter the reading."""
    def keyed(cases: Dict[str, List[Path]]) -> Dict[Tuple, List[Tuple[str, Path]]]:
        out: Dict[Tuple, List[Tuple[str, Path]]] = {}
        for case, images in cases.items():
            for image in images:
                out.setdefault(_header_key(image), []).append((case, image))
        return out

    source_keyed, target_keyed = keyed(source_cases), keyed(target_cases)
    overlap = Overlap(source, target)
    for key in sorted(set(source_keyed) & set(target_keyed), key=repr):
        source_hashes: Dict[str, List[str]] = {}
        for case, image in source_keyed[key]:
            source_hashes.setdefault(image_content_hash(image), []).append(case)
        for case, image in target_keyed[key]:
            for match in source_hashes.get(image_content_hash(image), []):
                if match not in overlap.pairs.setdefault(case, []):
                    overlap.pairs[case].append(match)
    overlap.pairs = {case: sorted(matches) for case, matches in sorted(overlap.pairs.items()) if matches}
    return overlap


# ---------------------------------------------------------------------------------------------------- splits


def default_splits(case_ids: Iterable[str]) -> Splits:
    """nnU-Net's default 5-fold split of these cases (its own function, seed and sorting, as in ``do_split``)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = sorted(case_ids)
    if len(ids) < DEFAULT_FOLDS:
        raise ValueError(f"nnU-Net's default {DEFAULT_FOLDS}-fold split needs at least {DEFAULT_FOLDS} training "
                         f"cases; the target has {len(ids)}")
    return [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]}
            for s in generate_crossval_split(ids, seed=DEFAULT_SPLIT_SEED, n_splits=DEFAULT_FOLDS)]


def leakage_free_splits(splits: Splits, overlapping: Iterable[str]) -> Splits:
    """The same folds with every overlapping case moved from validation to training."""
    bad = set(overlapping)
    out = []
    for fold in splits:
        moved = [c for c in fold["val"] if c in bad]
        out.append({"train": list(fold["train"]) + [c for c in moved if c not in fold["train"]],
                    "val": [c for c in fold["val"] if c not in bad]})
    empty = [i for i, fold in enumerate(out) if not fold["val"]]
    if empty:
        raise ValueError(f"fold(s) {empty} would have no validation case left once the cases shared with the "
                         f"pretraining data are moved to training; give a split with other validation cases")
    return out


def validated_in(splits: Splits, cases: Iterable[str]) -> Dict[str, List[int]]:
    """case -> the folds whose validation set holds it."""
    return {case: [i for i, fold in enumerate(splits) if case in fold["val"]] for case in cases}


# ---------------------------------------------------------------------------------------------------- datasets


@dataclass
class DatasetFolders:
    name: str
    raw: Path
    preprocessed: Path


def dataset_folders(dataset: int | str) -> DatasetFolders:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    name = maybe_convert_to_dataset_name(dataset)
    return DatasetFolders(name, nnunet_folder("nnUNet_raw") / name, nnunet_folder("nnUNet_preprocessed") / name)


def target_splits(target: DatasetFolders, configuration: Optional[str] = None,
                  plans: str = "nnUNetPlans") -> Tuple[Splits, str]:
    """The target's folds and where they come from: its splits_final.json, else nnU-Net's default folds of the
    cases nnU-Net's trainer would split (the preprocessed data of ``configuration`` when it exists, else the raw
    training cases)."""
    splits_file = target.preprocessed / SPLITS_FILE
    if splits_file.is_file():
        return json.loads(splits_file.read_text()), str(splits_file)
    ids: Optional[List[str]] = None
    origin = f"nnU-Net's default {DEFAULT_FOLDS} folds of the raw training cases of {target.name}"
    plans_file = target.preprocessed / f"{plans}.json"
    if configuration is not None and plans_file.is_file():
        config = json.loads(plans_file.read_text())["configurations"].get(configuration)
        data = target.preprocessed / config["data_identifier"] if config and "data_identifier" in config else None
        if data is not None and data.is_dir():
            from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

            ids = list(infer_dataset_class(str(data)).get_identifiers(str(data)))
            origin = f"nnU-Net's default {DEFAULT_FOLDS} folds of {data}"
    if ids is None:
        ids = list(_case_images(target.raw))
    return default_splits(ids), origin


def read_record(preprocessed_dataset: Path) -> Optional[dict]:
    path = Path(preprocessed_dataset) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(preprocessed_dataset: Path, overlap: Overlap) -> Path:
    """The overlap next to the target's splits (read by the trainers' start-of-run check)."""
    preprocessed_dataset.mkdir(parents=True, exist_ok=True)
    record = {"source": overlap.source, "target": overlap.target, "overlap": overlap.pairs,
              "checked": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return write_atomically(preprocessed_dataset / RECORD_FILE,
                            lambda tmp: tmp.write_text(json.dumps(record, indent=2)))


def write_splits(preprocessed_dataset: Path, splits: Splits) -> Path:
    preprocessed_dataset.mkdir(parents=True, exist_ok=True)
    return write_atomically(preprocessed_dataset / SPLITS_FILE,
                            lambda tmp: tmp.write_text(json.dumps(splits, indent=2)))


def check_leakage(source: int | str, target: int | str, configuration: Optional[str] = None,
                  plans: str = "nnUNetPlans", record: bool = True,
                  splits: Optional[Splits] = None) -> Tuple[Overlap, Splits, str]:
    """Compare every training image of ``source`` with the target's images; the overlap with the folds that
    validate on each overlapping case, the folds and their origin (``splits`` when given, else the target's, see
    :func:`target_splits`). Writes the record unless ``record=False``."""
    src, tgt = dataset_folders(source), dataset_folders(target)
    splits, origin = (splits, "the given split") if splits is not None else target_splits(tgt, configuration, plans)
    target_cases = _case_images(tgt.raw)
    validation = {c for fold in splits for c in fold["val"]}
    unknown = sorted(validation - set(target_cases))
    if unknown:
        raise ValueError(f"{origin} validates on case(s) that {tgt.raw} does not hold: {unknown[:10]}")
    overlap = find_overlap(_case_images(src.raw), target_cases, src.name, tgt.name)
    overlap.validated_in = validated_in(splits, overlap.pairs)
    if record:
        write_record(tgt.preprocessed, overlap)
    return overlap, splits, origin


def avoid_leakage(source: int | str, target: int | str, splits: Optional[Splits] = None,
                  configuration: Optional[str] = None, plans: str = "nnUNetPlans") -> Tuple[Overlap, Path]:
    """Write the target's splits_final.json with every case shared with the source only ever in training (of
    ``splits`` when given, else of the target's current folds), and the record. Returns the overlap and the file."""
    tgt = dataset_folders(target)
    if splits is not None:
        have = set(_case_images(tgt.raw))
        unknown = sorted({c for fold in splits for role in ("train", "val") for c in fold[role]} - have)
        if unknown:
            raise ValueError(f"the split names case(s) that {tgt.raw} does not hold: {unknown[:10]}")
    overlap, current, _ = check_leakage(source, target, configuration, plans, record=False, splits=splits)
    clean = leakage_free_splits(current, overlap.pairs)
    path = write_splits(tgt.preprocessed, clean)
    overlap.validated_in = validated_in(clean, overlap.pairs)
    write_record(tgt.preprocessed, overlap)
    return overlap, path


def describe(overlap: Overlap, origin: str) -> str:
    """One line per overlapping pair and the verdict (what ``leakage-check`` prints)."""
    lines = []
    for case, matches in overlap.pairs.items():
        folds = overlap.validated_in.get(case, [])
        where = f"validation case of fold(s) {', '.join(map(str, folds))}" if folds else "training only"
        for match in matches:
            lines.append(f"{overlap.target}/{case} == {overlap.source}/{match}   ({where})")
    leaking = overlap.leaking
    if leaking:
        lines.append(f"LEAKAGE: {len(leaking)} validation case(s) of {origin} share images with the training data "
                     f"of {overlap.source}. Write a split that keeps them in training: nnunet-transfer align-plans "
                     f"... --avoid-leakage (or edit splits_final.json)")
    else:
        lines.append(f"no leakage: no validation case of {origin} shares an image with the training data of "
                     f"{overlap.source}" + (f" ({len(overlap.pairs)} shared case(s) are training cases only)"
                                            if overlap.pairs else ""))
    return "\n".join(lines)


def leaking_validation_cases(preprocessed_dataset: Path, fold: int | str) -> Tuple[List[str], Optional[dict]]:
    """The recorded overlapping cases that ``fold`` of the current splits validates on (the trainers' check at the
    start of a run: reads the record and splits_final.json, no image is read). ([], None) without a record."""
    record = read_record(Path(preprocessed_dataset))
    if not record or not record.get("overlap"):
        return [], record
    splits_file = Path(preprocessed_dataset) / SPLITS_FILE
    if fold == "all":
        validation: Sequence[str] = list(record["overlap"])  # fold 'all' validates on every case
    elif splits_file.is_file():
        splits = json.loads(splits_file.read_text())
        validation = splits[int(fold)]["val"] if int(fold) < len(splits) else []
    else:
        return [], record
    return sorted(c for c in validation if c in record["overlap"]), record


def mots_kidney_splits(list_file: Path, target_cases: Optional[Iterable[str]] = None) -> Splits:
    """One fold with MOTS's own kidney split (DoDNet's ``MOTS_train.txt``/``MOTS_test.txt``: 168 train / 42 test
    KiTS19 cases) in KiTS21 case ids (``case_XXXXX``), as the KiTS21 transfer paper fine-tunes; restricted to
    ``target_cases`` when given (every listed case must be there)."""
    from nnunet_transfer.data.convert_mots import task_split

    train, test = task_split(list_file, "kidney")
    if not test:
        raise ValueError(f"{list_file} (and its partner list) name no kidney test case; give DoDNet's "
                         f"MOTS_train.txt / MOTS_test.txt")
    ids = {role: [f"case_{int(k):05d}" for k in keys] for role, keys in (("train", train), ("val", test))}
    if target_cases is not None:
        have = set(target_cases)
        missing = sorted(c for role in ids.values() for c in role if c not in have)
        if missing:
            raise ValueError(f"MOTS's kidney split names {len(missing)} case(s) the target dataset does not hold: "
                             f"{missing[:10]}")
    return [ids]


def leakage_warning(preprocessed_dataset: Path, fold: int | str) -> Optional[str]:
    """The warning a fine-tuning prints when its validation fold holds cases recorded as pretrained on (None: none
    recorded)."""
    cases, record = leaking_validation_cases(preprocessed_dataset, fold)
    if not cases:
        return None
    return (f"WARNING: leakage. Fold {fold} validates on {len(cases)} case(s) whose images {record['source']} "
            f"holds among its training images (the pretraining data): {', '.join(cases)}. Their validation scores "
            f"overstate the transfer gain. Write a split without them: nnunet-transfer align-plans -s SOURCE -t "
            f"TARGET --avoid-leakage (record: {Path(preprocessed_dataset) / RECORD_FILE}, checked "
            f"{record.get('checked', '?')})")
