"""MOTS (DoDNet's seven partially labelled CT datasets) -> one nnU-Net v2 raw dataset in the unified label space.

Source layout (``SOURCE`` is the folder given; one sub-folder per task, named after ``MOTSTask.source``)::

    SOURCE/LiTS/volume-N.nii[.gz] + segmentation-N.nii[.gz]     (at any depth below LiTS/: the training zips
                                                                 extract to media/nas/01_Datasets/CT/LITS/
                                                                 Training Batch 1|2/)
    SOURCE/KiTS19/case_XXXXX/imaging.nii.gz + segmentation.nii.gz (also SOURCE/KiTS19/data/case_XXXXX)
    SOURCE/Task08_HepaticVessel, Task07_Pancreas, Task10_Colon, Task06_Lung, Task09_Spleen:
        MSD layout imagesTr/NAME.nii.gz + labelsTr/NAME.nii.gz (macOS '._*' files are ignored)

Also accepted: LiTS as MSD ``Task03_Liver`` (``liver_N`` is LiTS ``volume-N``) and DoDNet's own folder names
(``0Liver``, ``1Kidney/origin``, ``2HepaticVessel``, ... ``6Spleen``) as produced by its ``load_mots.sh``.

Output (``$nnUNet_raw/DatasetXXX_MOTS``): case ids ``{task}_{NNN}`` from the number in the source file name
(``LiTS/volume-0.nii`` -> ``liver_000``, ``KiTS19/case_00012`` -> ``kidney_012``,
``Task08_HepaticVessel/imagesTr/hepaticvessel_001.nii.gz`` -> ``hepatic_vessel_001``); labels remapped to
the unified label space of :mod:`nnunet_transfer.data.mots_tasks`; dataset.json with the nnU-Net regions of
that module and ``dataset.json["nnunet_transfer"]`` = ``{"kind": "mots", "tasks": [all seven task names, by
index], "converted_tasks": [...], "case_to_task": {case_id: task_index}, "source_case": {case_id: image path
relative to SOURCE}, "test_cases": [...], "excluded_cases": [...], "split_file": name or null}``.

Split files (``split_file``), for a train/test split such as DoDNet's:

* JSON ``{"train": [...], "test": [...]}``. Entries are case ids (``liver_000``), image or label paths relative
  to ``SOURCE`` (``LiTS/volume-0.nii``), or DoDNet-style paths (below). Without ``"train"`` every case not in
  ``"test"`` is a training case; with it, cases in neither list are left out.
* A DoDNet list file (``MOTS_train.txt`` / ``MOTS_test.txt``): one case per line, ``IMAGE [LABEL]`` separated by
  white space, e.g. ``0123456_spacing_same/0Liver/imagesTr/liver_0.nii.gz 0123456_spacing_same/0Liver/...``.
  Only the image path is used: the task comes from a folder named ``<index><Name>`` (``0Liver``, ``1Kidney``,
  ...) or after a task's source folder, the case from ``case_XXXXX`` or the number ending the file name. A
  file whose name contains ``test`` lists test cases, otherwise training cases; the partner file (``train`` <->
  ``test`` in the name) next to it is read too if it exists. Blank lines and ``#`` comments are ignored.
  DoDNet's newer lists (``data_list/MOTS/MOTS_{train,test}.txt``) hold bare ids instead: ``liver_0`` (LiTS
  volume-0), ``kidney_00000`` (KiTS19 case_00000), ``hepaticvessel_001``, ``pancreas_001``, ``colon_001``,
  ``lung_001``, ``spleen_9`` (MSD file stems); the prefix names the task, as in DoDNet's ``MOTSDataset.py``.

Training cases go to imagesTr/labelsTr, test cases to imagesTs + labelsTs (kept for evaluation). Entries for
tasks that are not converted are ignored; an entry for a converted task that matches no case is an error.

Size: about 476 lines, as the seven MOTS sources' official layouts and their known oddities are read by one
converter, as DoDNet's own preparation does.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from nnunet_transfer.data.convert_kits import case_folders, scan_kits_cases
from nnunet_transfer.data.errors import ConversionError, raise_if_problems
from nnunet_transfer.data.mots_tasks import DATASET_JSON_KEY, TASKS, MOTSTask, nnunet_region_labels
from nnunet_transfer.data.raw_dataset import (GEOMETRY_POLICIES, NIFTI_ENDINGS, check_case_geometries,
                                              convert_volume_case, flatten, is_hidden, nifti_stem, relative_posix,
                                              run_cases, staged_dataset, target_dataset_folder, trailing_number,
                                              volume_jobs, warn_identity_affines, write_dataset_json)

PathLike = Union[str, Path]
CaseKey = Union[int, str]

#: other folder names accepted for a task (MSD Task03 for LiTS; DoDNet's load_mots.sh names)
ALTERNATIVE_FOLDERS: Dict[int, Tuple[str, ...]] = {
    0: ("Task03_Liver", "0Liver"), 1: ("1Kidney/origin", "1Kidney"), 2: ("2HepaticVessel",),
    3: ("3Pancreas",), 4: ("4Colon",), 5: ("5Lung",), 6: ("6Spleen",),
}
_LAYOUT_HELP = {
    "lits": "volume-N.nii[.gz] with segmentation-N.nii[.gz], at any depth (e.g. media/nas/01_Datasets/CT/LITS/"
            "Training Batch 1/)",
    "kits": "case_XXXXX/imaging.nii.gz with case_XXXXX/segmentation.nii.gz (directly or under data/)",
    "msd": "imagesTr/NAME.nii.gz with labelsTr/NAME.nii.gz",
}
_LITS_FILE = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")
_DODNET_FOLDER = re.compile(r"^(\d)[A-Za-z]+$")
_KITS_CASE = re.compile(r"^case_(\d+)$")
#: the case-id prefixes of DoDNet's newer list files (data_list/MOTS/MOTS_{train,test}.txt: ``liver_0``,
#: ``kidney_00000``, ``hepaticvessel_001``, ``spleen_9``; its MOTSDataset.py tells the task by these names)
DODNET_ID_PREFIXES: Dict[str, int] = {"liver": 0, "kidney": 1, "hepaticvessel": 2, "pancreas": 3, "colon": 4,
                                      "lung": 5, "spleen": 6}
_DODNET_ID = re.compile(r"^(" + "|".join(DODNET_ID_PREFIXES) + r")_(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class MotsCase:
    """One source case of a MOTS task; ``problems`` holds what is wrong with its files (e.g. missing label)."""

    task: MOTSTask
    key: CaseKey
    image: Path
    label: Optional[Path]
    problems: Tuple[str, ...] = ()

    @property
    def case_id(self) -> str:
        return mots_case_id(self.task, self.key)


def mots_case_id(task: MOTSTask, key: CaseKey) -> str:
    """``liver_000`` for number 0 of the liver task; a file stem without a number is kept (sanitised)."""
    if isinstance(key, int):
        return f"{task.name}_{key:03d}"
    return f"{task.name}_{re.sub(r'[^A-Za-z0-9-]+', '-', key)}"


def _expected_layout(task: MOTSTask) -> str:
    return "lits" if task.index == 0 else "kits" if task.index == 1 else "msd"


def _task_folder(source: Path, task: MOTSTask) -> Optional[Path]:
    for name in (task.source, *ALTERNATIVE_FOLDERS.get(task.index, ())):
        if (source / name).is_dir():
            return source / name
    return None


def _lits_files(folder: Path) -> Iterator[Path]:
    """Every ``volume-N`` / ``segmentation-N`` file at any depth below ``folder`` (sorted, hidden folders skipped).

    The two LiTS training zips extract to ``media/nas/01_Datasets/CT/LITS/Training Batch 1|2/``.
    """
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d) and d != "__MACOSX")
        for name in sorted(files):
            if _LITS_FILE.match(name):
                yield Path(root) / name


def _scan_lits(folder: Path, task: MOTSTask) -> Tuple[List[MotsCase], List[str]]:
    found: Dict[str, Dict[int, List[Path]]] = {"volume": {}, "segmentation": {}}
    for f in _lits_files(folder):
        m = _LITS_FILE.match(f.name)
        if f.is_file():
            found[m.group(1)].setdefault(int(m.group(2)), []).append(f)
    cases, problems = [], []
    for n in sorted(set(found["volume"]) | set(found["segmentation"])):
        vols, segs = found["volume"].get(n, []), found["segmentation"].get(n, [])
        if not vols:
            problems.append(f"image volume-{n}.nii[.gz] is missing for label {segs[0]}")
            continue
        case_problems = [f"LiTS case {n} has more than one {what} file: {', '.join(map(str, files))}; keep one"
                         for what, files in (("image", vols), ("label", segs)) if len(files) > 1]
        if not segs:
            case_problems.append(f"label segmentation-{n}.nii[.gz] is missing for image {vols[0]} "
                                 f"(searched {folder} and all folders below it)")
        cases.append(MotsCase(task, n, vols[0], segs[0] if segs else None, tuple(case_problems)))
    return cases, problems


def _scan_msd(folder: Path, task: MOTSTask) -> Tuple[List[MotsCase], List[str]]:
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    cases, problems, seen = [], [], set()
    for f in sorted(images_dir.iterdir()):
        stem = nifti_stem(f.name)
        if stem is None or is_hidden(f.name) or not f.is_file():
            continue
        seen.add(stem)
        label = next((labels_dir / f"{stem}{e}" for e in NIFTI_ENDINGS if (labels_dir / f"{stem}{e}").is_file()),
                     None)
        case_problems = () if label else (f"label {labels_dir / f.name} is missing for image {f}",)
        number = trailing_number(stem)
        cases.append(MotsCase(task, number if number is not None else stem, f, label, case_problems))
    if labels_dir.is_dir():
        for f in sorted(labels_dir.iterdir()):
            stem = nifti_stem(f.name)
            if stem is not None and not is_hidden(f.name) and stem not in seen:
                problems.append(f"label {f} has no image {images_dir / f.name}")
    return cases, problems


def _scan_kits19(folder: Path, task: MOTSTask) -> Tuple[List[MotsCase], List[str]]:
    root = folder if case_folders(folder) else folder / "data"
    kits = scan_kits_cases(root, "segmentation", unlabelled_ok=True)
    unlabelled = {c.case_id for c in kits if c.label is None and not c.problems}
    if unlabelled:
        print(f"MOTS {task.name}: skipping {len(unlabelled)} unlabelled KiTS19 test cases in {root}", flush=True)
    cases = [MotsCase(task, c.number, c.image if c.image else c.folder / "imaging.nii.gz", c.label, c.problems)
             for c in kits if c.case_id not in unlabelled]
    return cases, []


def scan_task(source: Path, task: MOTSTask) -> Tuple[List[MotsCase], List[str]]:
    """All cases of one task under ``source`` (layout detected from the folder content), plus problems."""
    folder = _task_folder(source, task)
    expected = _LAYOUT_HELP[_expected_layout(task)]
    if folder is None:
        return [], [f"no cases found for task {task.name}: folder {source / task.source} does not exist (expected "
                    f"{expected} there); pass tasks=[...] (--tasks) to convert only the tasks you have"]
    if (folder / "imagesTr").is_dir():
        cases, problems = _scan_msd(folder, task)
    elif case_folders(folder) or case_folders(folder / "data"):
        cases, problems = _scan_kits19(folder, task)
    else:
        cases, problems = _scan_lits(folder, task)
    if not cases and not problems:
        problems.append(f"no cases found for task {task.name} in {folder}: expected {expected}")
    by_id: Dict[str, MotsCase] = {}
    for c in cases:
        if c.case_id in by_id:
            problems.append(f"{by_id[c.case_id].image} and {c.image} both map to case id {c.case_id}; "
                            f"remove one of them")
        by_id[c.case_id] = c
    print(f"MOTS {task.name}: {len(cases)} cases in {folder}", flush=True)
    return cases, problems


def select_tasks(tasks: Optional[Sequence[str]]) -> List[MOTSTask]:
    """Tasks by name (``liver``), source folder (``LiTS``) or index (``0``), case-insensitive; None = all."""
    if tasks is None:
        return list(TASKS)
    if isinstance(tasks, str):
        tasks = [tasks]
    lookup = {}
    for t in TASKS:
        lookup.update({t.name.lower(): t, t.source.lower(): t, str(t.index): t})
    unknown = [x for x in tasks if str(x).lower() not in lookup]
    if unknown:
        raise ConversionError(f"unknown MOTS task(s) {unknown}; choose from {[t.name for t in TASKS]} "
                              f"(or their source folders {[t.source for t in TASKS]})")
    chosen = {lookup[str(x).lower()].index for x in tasks}
    if not chosen:
        raise ConversionError("tasks is empty: name at least one MOTS task, or pass None for all seven")
    return [t for t in TASKS if t.index in chosen]


# ----------------------------------------------------------------------------------------------------------------
# split files


@dataclass(frozen=True)
class SplitSpec:
    """Entries of a split file; ``train`` None means 'every case not listed as test'."""

    train: Optional[List[str]]
    test: List[str]
    origin: str


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConversionError(f"split file {path} is not a UTF-8 text file (byte {e.start})") from None


def _read_list_file(path: Path) -> List[str]:
    entries = []
    for line in _read_text(path).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line.split()[0])
    return entries


def _partner_list(path: Path, role: str) -> Optional[Path]:
    other = "train" if role == "test" else "test"
    i = path.name.lower().rfind(role)
    if i < 0:
        return None
    word = other.upper() if path.name[i:i + len(role)].isupper() else other
    partner = path.with_name(path.name[:i] + word + path.name[i + len(role):])
    return partner if partner.is_file() else None


def read_split_file(split_file: PathLike) -> SplitSpec:
    """Parse a JSON split or a DoDNet list file (see the module docstring for both formats)."""
    path = Path(split_file)
    if not path.is_file():
        raise ConversionError(f"split file {path} does not exist")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(_read_text(path))
        except (json.JSONDecodeError, RecursionError) as e:
            raise ConversionError(f"split file {path} is not valid JSON: {e}") from e
        fmt = 'expected {"train": [case ids or paths], "test": [...]}'
        if not isinstance(data, dict) or not data or set(data) - {"train", "test"}:
            raise ConversionError(f"split file {path} has an unexpected structure: {fmt}")
        for key, value in data.items():
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConversionError(f"split file {path}: '{key}' must be a list of strings; {fmt}")
        return SplitSpec(data.get("train"), data.get("test", []), str(path))
    role = "test" if "test" in path.name.lower() else "train"
    entries = _read_list_file(path)
    partner = _partner_list(path, role)
    partner_entries = _read_list_file(partner) if partner else None
    origin = str(path) + (f" + {partner}" if partner else "")
    if role == "train":
        return SplitSpec(entries, partner_entries or [], origin)
    return SplitSpec(partner_entries, entries, origin)


def _parse_entry(entry: str) -> Tuple[Optional[int], Optional[CaseKey]]:
    """(task index, case key) guessed from a split entry that is not a known case id or source path."""
    parts = [p for p in entry.split("/") if p and p != "."]
    if not parts:
        return None, None
    if len(parts) == 1:
        bare = _DODNET_ID.match(nifti_stem(parts[0]) or parts[0])
        if bare:
            return DODNET_ID_PREFIXES[bare.group(1).lower()], int(bare.group(2))
        for t in sorted(TASKS, key=lambda t: -len(t.name)):
            if parts[0].startswith(f"{t.name}_"):
                rest = parts[0][len(t.name) + 1:]
                return t.index, int(rest) if rest.isdigit() else rest
    folder_names = {}
    for t in TASKS:
        for name in (t.source, *ALTERNATIVE_FOLDERS.get(t.index, ())):
            folder_names[name.split("/")[0].lower()] = t.index
    task_index = None
    for p in parts[:-1] if len(parts) > 1 else parts:
        m = _DODNET_FOLDER.match(p)
        if p.lower() in folder_names:
            task_index = folder_names[p.lower()]
        elif m and int(m.group(1)) < len(TASKS):
            task_index = int(m.group(1))
    key: Optional[CaseKey] = None
    for p in parts:
        m = _KITS_CASE.match(p)
        if m:
            key = int(m.group(1))
    if key is None:
        stem = nifti_stem(parts[-1]) or parts[-1]
        number = trailing_number(stem)
        key = number if number is not None else stem
    return task_index, key


def task_split(split_file: PathLike, task: str) -> Tuple[List[CaseKey], List[CaseKey]]:
    """(train, test) case keys of one MOTS task in a split file (DoDNet's list files or JSON), e.g. the KiTS19 case
    numbers of MOTS's kidney split (168 train / 42 test in DoDNet's lists). Without a train list: ([], test)."""
    spec = read_split_file(split_file)
    index = next((t.index for t in TASKS if t.name == task), None)
    if index is None:
        raise ConversionError(f"unknown MOTS task {task!r}; tasks: {[t.name for t in TASKS]}")

    def keys(entries: Optional[Sequence[str]]) -> List[CaseKey]:
        found = [_parse_entry(e.strip().replace("\\", "/")) for e in entries or ()]
        return sorted({key for i, key in found if i == index and key is not None},
                      key=lambda k: (isinstance(k, str), k if isinstance(k, str) else int(k)))

    return keys(spec.train), keys(spec.test)


def assign_split(spec: Optional[SplitSpec], cases: Sequence[MotsCase], source: Path,
                 task_indices: Sequence[int]) -> Tuple[Dict[str, str], List[str]]:
    """case_id -> "train" | "test" | "excluded", and the problems of the split (unmatched entries, overlaps)."""
    if spec is None:
        return {c.case_id: "train" for c in cases}, []
    by_id = {c.case_id: c.case_id for c in cases}
    by_path = {}
    for c in cases:
        for p in (c.image, c.label):
            if p is not None:
                by_path[relative_posix(p, source)] = c.case_id
    by_key = {(c.task.index, c.key): c.case_id for c in cases}
    problems: List[str] = []
    other_tasks: Dict[str, int] = {}

    def resolve(entries: Sequence[str], role: str) -> List[str]:
        ids = []
        for raw in entries:
            entry = raw.strip().replace("\\", "/")
            while entry.startswith("./"):
                entry = entry[2:]
            if entry in by_id or entry in by_path:
                ids.append(by_id.get(entry) or by_path[entry])
                continue
            task_index, key = _parse_entry(entry)
            if task_index is None:
                problems.append(f"split file {spec.origin}: cannot tell which MOTS task the {role} entry '{raw}' "
                                f"belongs to; use a case id like 'liver_000' or a path relative to {source}")
            elif task_index in task_indices:
                if (task_index, key) in by_key:
                    ids.append(by_key[(task_index, key)])
                else:
                    problems.append(f"split file {spec.origin}: {role} entry '{raw}' matches no case found in "
                                    f"{source} (task {TASKS[task_index].name})")
            else:
                other_tasks[TASKS[task_index].name] = other_tasks.get(TASKS[task_index].name, 0) + 1
        return ids

    test = resolve(spec.test, "test")
    if spec.train is not None:
        train = resolve(spec.train, "train")
    else:
        test_set = set(test)
        train = [c.case_id for c in cases if c.case_id not in test_set]
    both = sorted(set(train) & set(test))
    if both:
        problems.append(f"split file {spec.origin} lists {len(both)} case(s) as both train and test: {both[:10]}")
    if other_tasks:
        print(f"MOTS split {spec.origin}: ignoring the entries of tasks not converted ("
              + ", ".join(f"{name}: {n}" for name, n in sorted(other_tasks.items())) + ")", flush=True)
    roles = {c.case_id: "excluded" for c in cases}
    roles.update({i: "train" for i in train})
    roles.update({i: "test" for i in test})
    return roles, problems


# ----------------------------------------------------------------------------------------------------------------


def convert_mots(source: PathLike, dataset_id: int, name: str = "MOTS", split_file: Optional[PathLike] = None,
                 tasks: Optional[Sequence[str]] = None, num_workers: int = 1,
                 geometry_mismatch: str = "error", force: bool = False) -> Path:
    """Convert the MOTS sources under ``source`` into ``$nnUNet_raw/DatasetXXX_Name``; returns that folder.

    ``tasks`` limits the conversion to some of the seven tasks (names, source folders or indices);
    ``split_file`` sends some cases to imagesTs/labelsTs (formats in the module docstring). Every case is
    checked (readable files, 3D volumes, label values allowed for its task, image/label geometry); all problems
    are reported together in one :class:`ConversionError` and then nothing is written.

    ``geometry_mismatch`` decides what an image/label header mismatch does (LiTS case 53's label carries an
    identity header, nnU-Net issue #2751): ``"error"`` (default), ``"use-image"`` (write the label with the
    image's geometry when the array sizes agree) or ``"skip"`` (leave the case out); both are printed in the
    summary and recorded in dataset.json. Cases whose image has an identity affine (LiTS volumes 28-47) are
    converted with a warning naming each case. An existing dataset of the same id and name is replaced only with
    ``force`` (:class:`~nnunet_transfer.data.existing_dataset.DatasetExistsError` otherwise).
    """
    source = Path(source)
    selected = select_tasks(tasks)
    if geometry_mismatch not in GEOMETRY_POLICIES:
        raise ConversionError(f"geometry_mismatch must be one of {GEOMETRY_POLICIES}, got {geometry_mismatch!r}")
    target = target_dataset_folder(dataset_id, name, force)
    spec = read_split_file(split_file) if split_file is not None else None
    if not source.is_dir():
        raise ConversionError(f"MOTS source folder {source} does not exist")

    cases: List[MotsCase] = []
    problems: List[str] = []
    for task in selected:
        task_cases, task_problems = scan_task(source, task)
        cases += task_cases
        problems += task_problems
    roles, split_problems = assign_split(spec, cases, source, [t.index for t in selected])
    problems += split_problems
    used = [c for c in cases if roles[c.case_id] != "excluded"]
    problems += [p for c in used for p in c.problems]
    used = [c for c in used if not c.problems]
    geometry = check_case_geometries([(c.case_id, c.image, c.label) for c in used], geometry_mismatch)
    used = [c for c in used if c.case_id not in set(geometry.skipped)]
    warn_identity_affines(geometry.identity_affine, "MOTS")
    excluded = sorted(i for i, r in roles.items() if r == "excluded")
    train = [c for c in used if roles[c.case_id] == "train"]
    test = [c for c in used if roles[c.case_id] == "test"]
    if spec is not None:
        print(f"MOTS split {spec.origin}: {len(train)} train, {len(test)} test, {len(excluded)} left out", flush=True)
    if not train and not problems:
        problems.append(f"no training cases to convert in {source}")

    task_of = {c.case_id: c.task for c in used}
    labels, regions_class_order = nnunet_region_labels()
    with staged_dataset(target, force) as stage:
        jobs = volume_jobs([(c.case_id, c.image, c.label, roles[c.case_id] == "test") for c in used], stage,
                           lambda case_id: task_of[case_id].label_map, geometry.use_image_geometry)
        problems += flatten(run_cases(convert_volume_case, jobs, num_workers, title=target.name))
        raise_if_problems(problems, f"converting MOTS from {source} to {target.name} failed, nothing was written")
        write_dataset_json(
            stage, {0: "CT"}, labels, len(train), ".nii.gz", regions_class_order=list(regions_class_order),
            dataset_name=target.name,
            description="MOTS (DoDNet): LiTS, KiTS19 and MSD Task06/07/08/09/10 in one unified label space; "
                        "each case labels only its own task's structures",
            license="see the licences of LiTS, KiTS19 and the Medical Segmentation Decathlon",
            **{DATASET_JSON_KEY: {
                "kind": "mots",
                "tasks": [t.name for t in TASKS],
                "converted_tasks": [t.name for t in selected],
                "case_to_task": {c.case_id: c.task.index for c in used},
                "source_case": {c.case_id: relative_posix(c.image, source) for c in used},
                "test_cases": [c.case_id for c in test],
                "excluded_cases": excluded,
                "split_file": Path(split_file).name if split_file is not None else None,
                "geometry_mismatch": geometry.to_json(),
            }})
    for line in geometry.summary_lines():
        print(f"MOTS {line}", flush=True)
    return target
