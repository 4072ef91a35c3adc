"""Seeded synthetic datasets in the exact on-disk layouts of MOTS' seven sources, KiTS19/21/23 and Kvasir-SEG.

Converters, end-to-end tests and the demo run without real data on small synthetic cases that look like the real
releases *on disk*: same folder trees, file names, file formats,
label values, anisotropic spacing, non-identity directions, the KiTS19 axis-order quirk, MSD ``dataset.json``
files and JPEG masks with compression artefacts. The images come from :func:`nnunet_transfer.data.phantom.make_phantom`.

Determinism: the same arguments give byte-identical files (SimpleITK writes gzip headers without a time stamp,
Pillow's JPEG encoder is deterministic). Each case is drawn from its own seed ``(seed, dataset, case id)``, so
adding cases never changes existing ones, and a KiTS case id gives the same scan in MOTS' ``KiTS19`` folder and
in the KiTS21/KiTS23 layouts (the real KiTS21 cases 0..209 *are* the KiTS19 cases, which is why a model
pretrained on MOTS has seen them).

Every generator writes a marker file (:data:`MARKER_NAME`) listing what it wrote. It refuses to write into a
non-empty directory unless that marker says the directory came from the same generator, in which case the
previously written files are removed and the data is written again.

Size: about 628 lines, as the writers of every official layout we imitate share the phantom calls and the marker
file, and are kept side by side so that the layouts can be compared.
"""

from __future__ import annotations

import json
import math
import os
import string
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from nnunet_transfer.data.mots_tasks import TASKS, MOTSTask
from nnunet_transfer.data.phantom import (ABDOMEN, CHEST, DEFAULT_LESION_PROBS, FieldOfView, Geometry, Phantom,
                                          make_phantom)
from nnunet_transfer.errors import InvalidValueError

PathLike = Union[str, Path]

MARKER_NAME = ".nnunet_transfer_synthetic.json"
DEFAULT_SHAPE: Tuple[int, int, int] = (24, 64, 64)

# dataset codes mixed into the per-case seeds (fixed forever: changing them changes every synthetic file)
_SEED_MOTS, _SEED_KITS, _SEED_KVASIR = 11, 12, 13

# ----------------------------------------------------------------------------------------------------------
# MOTS: which phantom structure each source label value stands for
# ----------------------------------------------------------------------------------------------------------

#: source folder -> {source label value: phantom structure}; label values are painted in increasing order,
#: so a tumour (2) overwrites its organ (1) exactly as in the real label maps
SOURCE_STRUCTURES: Dict[str, Dict[int, str]] = {
    "LiTS": {1: "liver", 2: "liver_tumor"},
    "KiTS19": {1: "kidneys", 2: "kidney_tumor"},  # KiTS19 labels cysts as kidney
    "Task08_HepaticVessel": {1: "hepatic_vessel", 2: "liver_tumor"},
    "Task07_Pancreas": {1: "pancreas", 2: "pancreas_tumor"},
    "Task10_Colon": {1: "colon_tumor"},
    "Task06_Lung": {1: "lung_tumor"},
    "Task09_Spleen": {1: "spleen"},
}

#: lesions every case of a source must contain (sources whose only label is a tumour; KiTS always has a mass)
_SOURCE_MIN_LESIONS: Dict[str, Dict[str, int]] = {
    "KiTS19": {"kidney_tumor": 1},
    "Task10_Colon": {"colon_tumor": 1},
    "Task06_Lung": {"lung_tumor": 1},
}

#: the part of the body each source's scans cover (KiTS: abdominal CT centred on the kidneys; MSD lung: chest).
#: Physical views: the anatomy has the same size in mm in every source, so what a network learns about kidneys
#: in MOTS' KiTS19 folder carries over to the KiTS21 target.
SOURCE_FIELD_OF_VIEW: Dict[str, FieldOfView] = {source: CHEST if source == "Task06_Lung" else ABDOMEN
                                                for source in SOURCE_STRUCTURES}
#: in-plane storage flips (x, y) of each source: one per dataset, as in the real releases (the MSD stores its
#: scans in RAS order, the others in LPS), so the datasets MOTS mixes differ while each is consistent
SOURCE_FLIPS: Dict[str, Tuple[bool, bool]] = {source: (True, True) if source.startswith("Task") else (False, False)
                                              for source in SOURCE_STRUCTURES}

#: MSD folder -> (dataset.json name, case file stem pattern, dataset.json labels) as in the real release
MSD_SOURCES: Dict[str, Tuple[str, str, Dict[str, str]]] = {
    "Task08_HepaticVessel": ("HepaticVessel", "hepaticvessel_{:03d}",
                             {"0": "background", "1": "Vessel", "2": "Tumour"}),
    "Task07_Pancreas": ("Pancreas", "pancreas_{:03d}", {"0": "background", "1": "pancreas", "2": "cancer"}),
    "Task10_Colon": ("Colon", "colon_{:03d}", {"0": "background", "1": "colon cancer primaries"}),
    "Task06_Lung": ("Lung", "lung_{:03d}", {"0": "background", "1": "cancer"}),
    "Task09_Spleen": ("Spleen", "spleen_{}", {"0": "background", "1": "spleen"}),
}


def _check_source_table() -> None:
    """The structure table must cover exactly the label values of :data:`mots_tasks.TASKS` (no drift)."""
    sources = {t.source for t in TASKS}
    if sources != set(SOURCE_STRUCTURES):
        raise RuntimeError(f"synthetic.SOURCE_STRUCTURES covers {sorted(SOURCE_STRUCTURES)} but mots_tasks.TASKS "
                           f"has sources {sorted(sources)}; update SOURCE_STRUCTURES")
    for t in TASKS:
        if set(SOURCE_STRUCTURES[t.source]) != set(t.label_map):
            raise RuntimeError(f"synthetic.SOURCE_STRUCTURES[{t.source!r}] labels {sorted(SOURCE_STRUCTURES[t.source])}"
                               f" differ from mots_tasks label values {sorted(t.label_map)}; update the table")


_check_source_table()


# ----------------------------------------------------------------------------------------------------------
# output directory handling
# ----------------------------------------------------------------------------------------------------------


class _Output:
    """Writes files below one directory, records them and leaves the marker of a synthetic run."""

    def __init__(self, out_dir: PathLike, kind: str, seed: int):
        self.root = Path(out_dir)
        self.kind = kind
        self.seed = seed
        self.files: List[str] = []
        _prepare_out_dir(self.root, kind)

    def path(self, rel: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        self.files.append(rel)
        return p

    def image(self, rel: str, array: np.ndarray, geometry: Geometry, slice_first: bool = False) -> Path:
        import SimpleITK as sitk

        p = self.path(rel)
        sitk.WriteImage(geometry.to_sitk(array, slice_first=slice_first), str(p))
        return p

    def json(self, rel: str, obj: object) -> Path:
        p = self.path(rel)
        p.write_text(json.dumps(obj, indent=4, sort_keys=False) + "\n")
        return p

    def finish(self, **info: object) -> None:
        marker = {"generator": "nnunet_transfer.data.synthetic", "kind": self.kind, "seed": self.seed, **info,
                  "files": sorted(self.files)}
        (self.root / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n")


def _prepare_out_dir(root: Path, kind: str) -> None:
    """Create ``root``; if it holds files, accept it only when a previous ``synth_<kind>`` run wrote them."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} exists and is not a directory; pass a directory path for the synthetic data")
    if root.is_dir() and any(root.iterdir()):
        marker = root / MARKER_NAME
        if not marker.is_file():
            raise FileExistsError(
                f"{root} is not empty and was not written by synth_{kind} (no {MARKER_NAME} in it); refusing to "
                f"write synthetic data next to other files. Pass a new or empty directory, or delete {root} first.")
        try:
            info = json.loads(marker.read_text())
        except json.JSONDecodeError as e:
            raise InvalidValueError(
                f"{marker} is not valid JSON ({e}); delete {root} and generate the data again") from e
        if info.get("kind") != kind:
            raise FileExistsError(
                f"{root} holds synthetic {info.get('kind')!r} data (see {marker}), not {kind!r}; refusing to mix "
                f"datasets. Pass another directory, or delete {root} first.")
        _remove_previous(root, info.get("files", []), marker)
    root.mkdir(parents=True, exist_ok=True)


def _remove_previous(root: Path, files: Sequence[str], marker: Path) -> None:
    """Delete the files a previous run listed (only inside ``root``) and the directories they leave empty."""
    root_resolved = root.resolve()
    dirs = set()
    for rel in files:
        p = (root / rel).resolve()
        if root_resolved not in p.parents:
            raise InvalidValueError(f"{marker} lists {rel!r}, which is outside {root}; the marker was edited by hand. "
                                    f"Delete {root} and generate the data again.")
        if p.is_file():
            p.unlink()
        dirs.update(q for q in p.parents if root_resolved in q.parents)
    marker.unlink()
    for d in sorted(dirs, key=lambda q: len(q.parts), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _case_rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(e) for e in entropy]))


def _shape(shape: Optional[Sequence[int]]) -> Tuple[int, int, int]:
    s = tuple(int(v) for v in (shape if shape is not None else DEFAULT_SHAPE))
    if len(s) != 3:
        raise InvalidValueError(f"shape must be (z, y, x), got {shape!r}")
    return s  # type: ignore[return-value]


#: peak memory per voxel (3D) / pixel (2D) while one case is generated (measured: about 86-98 and 172 bytes)
BYTES_PER_VOXEL, BYTES_PER_PIXEL = 128, 256


def available_memory() -> Optional[int]:
    """Bytes of memory this machine can still give (Linux: MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(shape: Sequence[int], bytes_per_element: int) -> None:
    """Refuse a shape whose generation would not fit in the memory available, before anything is allocated."""
    needed = bytes_per_element * math.prod(int(v) for v in shape)
    available = available_memory()
    if available is not None and needed > available:
        raise InvalidValueError(
            f"shape {tuple(int(v) for v in shape)} needs about {needed / 2**30:,.1f} GiB of memory per case while "
            f"generating it; {available / 2**30:,.1f} GiB are available",
            fix="give a smaller --shape (the defaults are small: synthetic data is for tests and demos)")


def _check_count(name: str, value: int, minimum: int = 1, maximum: Optional[int] = None) -> int:
    if int(value) != value or value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise InvalidValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _paint(phantom: Phantom, structures: Dict[int, str]) -> np.ndarray:
    seg = np.zeros(phantom.image.shape, dtype=np.uint8)
    for value in sorted(structures):
        seg[phantom.masks[structures[value]]] = value
    return seg


# ----------------------------------------------------------------------------------------------------------
# KiTS case phantoms (shared by MOTS' KiTS19 folder and the KiTS19/21/23 layouts)
# ----------------------------------------------------------------------------------------------------------


#: kidney lesion profiles of the KiTS phantoms: (lesion radius ranges, tissue HU ranges) replacing the phantom's.
#: ``standard``: the phantom's own (tumours of ~0.15 % of the voxels, tumour HU overlapping the medulla's);
#: ``large``: tumours about half a kidney and cysts about twice as wide, tumours clearly darker than the medulla and
#: cysts darker still (their HU is that of muscle and bowel, so only their place inside a kidney tells them apart);
#: ``bright``: tumours and cysts a little wider still, the tumours hyper-enhancing (brighter than the cortex, as
#: clear-cell carcinomas can be in the arterial phase): masses that a CPU training of a few hundred steps learns (the
#: demo's data)
KIDNEY_LESION_PROFILES: Dict[str, Tuple[Dict[str, Tuple[float, float]], Dict[str, Tuple[float, float]]]] = {
    "standard": ({}, {}),
    "large": ({"kidney_tumor": (0.12, 0.16), "kidney_cyst": (0.07, 0.09)},
              {"kidney_tumor": (30.0, 45.0), "kidney_cyst": (-25.0, -10.0)}),
    "bright": ({"kidney_tumor": (0.14, 0.18), "kidney_cyst": (0.08, 0.10)},
               {"kidney_tumor": (240.0, 280.0), "kidney_cyst": (-30.0, -15.0)}),
}


def _kidney_lesions(profile: str) -> Tuple[Dict[str, Tuple[float, float]], Dict[str, Tuple[float, float]]]:
    if profile not in KIDNEY_LESION_PROFILES:
        raise ValueError(f"kidney lesion profile must be one of {sorted(KIDNEY_LESION_PROFILES)}, got {profile!r}")
    return KIDNEY_LESION_PROFILES[profile]


def kits_case_has_cyst(case_id: int) -> bool:
    """Synthetic KiTS cases with odd ids and all ids >= 210 contain one kidney cyst."""
    return case_id % 2 == 1 or case_id >= 210


def kits_phantom(case_id: int, seed: int, shape: Tuple[int, int, int], lesions: str = "standard") -> Phantom:
    """The phantom of synthetic KiTS case ``case_id``: at least one tumour, a cyst per :func:`kits_case_has_cyst`;
    ``lesions`` names a :data:`KIDNEY_LESION_PROFILES` entry (the anatomy of a case is the same in every profile)."""
    radius, hu = _kidney_lesions(lesions)
    return make_phantom(shape, _case_rng(seed, _SEED_KITS, case_id),
                        lesion_counts={"kidney_tumor": 1 + int(_case_rng(seed, _SEED_KITS, case_id, 1).random() < 0.2),
                                       "kidney_cyst": int(kits_case_has_cyst(case_id))},
                        fov=SOURCE_FIELD_OF_VIEW["KiTS19"], flips=SOURCE_FLIPS["KiTS19"], lesion_radius=radius,
                        tissue_hu=hu)


# ----------------------------------------------------------------------------------------------------------
# MOTS
# ----------------------------------------------------------------------------------------------------------


def _mots_phantom(task: MOTSTask, case: int, seed: int, shape: Tuple[int, int, int],
                  kidney_lesions: str = "standard") -> Phantom:
    if task.source == "KiTS19":
        return kits_phantom(case, seed, shape, kidney_lesions)
    counts = _source_lesion_counts(task.source, _case_rng(seed, _SEED_MOTS, task.index, case, 1))
    return make_phantom(shape, _case_rng(seed, _SEED_MOTS, task.index, case), lesion_counts=counts,
                        fov=SOURCE_FIELD_OF_VIEW[task.source], flips=SOURCE_FLIPS[task.source])


def _source_lesion_counts(source: str, rng: np.random.Generator) -> Optional[Dict[str, int]]:
    minimum = _SOURCE_MIN_LESIONS.get(source)
    if not minimum:
        return None
    return {k: max(v, int(rng.choice(len(DEFAULT_LESION_PROBS), p=DEFAULT_LESION_PROBS))) for k, v in minimum.items()}


def synth_mots(out_dir: PathLike, cases: int = 2, seed: int = 0, shape: Optional[Tuple[int, int, int]] = None,
               source_cases: Optional[Dict[str, int]] = None, kidney_lesions: str = "standard") -> dict:
    """Write ``cases`` synthetic CT cases of each of the seven MOTS sources in their real on-disk layouts.

    Layout under ``out_dir`` (labels per :data:`SOURCE_STRUCTURES`, semantics per ``mots_tasks.TASKS``)::

        LiTS/volume-{i}.nii, LiTS/segmentation-{i}.nii                  i = 0..cases-1, uncompressed
        KiTS19/case_{i:05d}/imaging.nii.gz, segmentation.nii.gz         i = 0..cases-1, slice-first axes
        Task08_HepaticVessel/{imagesTr,labelsTr}/hepaticvessel_{i:03d}.nii.gz, imagesTs/..., dataset.json
        Task07_Pancreas/.../pancreas_{i:03d}.nii.gz     Task10_Colon/.../colon_{i:03d}.nii.gz
        Task06_Lung/.../lung_{i:03d}.nii.gz             Task09_Spleen/.../spleen_{i}.nii.gz

    MSD ids run 1..cases (the real MSD has no case 0) and the one unlabeled ``imagesTs`` image is case
    ``cases + 1``; MSD images carry no ``_0000`` channel suffix, as in the real release.

    Args:
        out_dir: new or empty directory (or one a previous ``synth_mots`` run wrote; it is rewritten).
        cases: cases per source.
        seed: same seed, same bytes.
        shape: ``(z, y, x)`` voxels per case, default :data:`DEFAULT_SHAPE`.
        source_cases: cases of particular sources instead of ``cases`` (``{"KiTS19": 12}``; in the real MOTS the
            kidney source is the largest, 210 scans).
        kidney_lesions: :data:`KIDNEY_LESION_PROFILES` entry of the KiTS19 folder's scans (use the same for the
            KiTS21 target of a transfer experiment).

    Returns:
        ``{"kind", "out_dir", "seed", "shape", "sources": {source: {"dir", "cases", "images", "labels",
        "test_images"}}, "files"}``; paths are absolute strings, ``files`` are relative to ``out_dir``.
    """
    cases = _check_count("cases", cases)
    unknown = sorted(set(source_cases or {}) - set(SOURCE_STRUCTURES))
    if unknown:
        raise ValueError(f"unknown MOTS sources {unknown}; the sources are {sorted(SOURCE_STRUCTURES)}")
    per_source = {s: _check_count(f"cases of {s}", (source_cases or {}).get(s, cases)) for s in SOURCE_STRUCTURES}
    _kidney_lesions(kidney_lesions)
    shape = _shape(shape)
    check_fits_in_memory(shape, BYTES_PER_VOXEL)
    out = _Output(out_dir, "mots", seed)
    sources: Dict[str, dict] = {}
    for task in TASKS:
        structures = SOURCE_STRUCTURES[task.source]
        entry: Dict[str, list] = {"cases": [], "images": [], "labels": [], "test_images": []}
        msd = MSD_SOURCES.get(task.source)
        training = []
        n_cases = per_source[task.source]
        for i in range(n_cases):
            case_no = i + 1 if msd else i
            ph = _mots_phantom(task, case_no, seed, shape, kidney_lesions)
            seg = _paint(ph, structures)
            if task.source == "LiTS":
                case_id = str(i)
                img_rel, seg_rel = f"LiTS/volume-{i}.nii", f"LiTS/segmentation-{i}.nii"
            elif task.source == "KiTS19":
                case_id = f"case_{i:05d}"
                img_rel, seg_rel = f"KiTS19/{case_id}/imaging.nii.gz", f"KiTS19/{case_id}/segmentation.nii.gz"
            else:
                case_id = msd[1].format(case_no)
                img_rel = f"{task.source}/imagesTr/{case_id}.nii.gz"
                seg_rel = f"{task.source}/labelsTr/{case_id}.nii.gz"
                training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
            slice_first = task.source == "KiTS19"
            entry["cases"].append(case_id)
            entry["images"].append(str(out.image(img_rel, ph.image, ph.geometry, slice_first)))
            entry["labels"].append(str(out.image(seg_rel, seg, ph.geometry, slice_first)))
        if msd:
            name, pattern, labels = msd
            test_id = pattern.format(n_cases + 1)
            ph = _mots_phantom(task, n_cases + 1, seed, shape)
            entry["test_images"].append(str(out.image(f"{task.source}/imagesTs/{test_id}.nii.gz", ph.image,
                                                      ph.geometry)))
            out.json(f"{task.source}/dataset.json", {
                "name": name,
                "description": f"SYNTHETIC stand-in for MSD {task.source} written by nnunet_transfer (not real data)",
                "reference": "nnunet_transfer synthetic phantom",
                "licence": "CC-BY-SA 4.0",
                "release": "synthetic",
                "tensorImageSize": "3D",
                "modality": {"0": "CT"},
                "labels": labels,
                "numTraining": n_cases,
                "numTest": 1,
                "training": training,
                "test": [f"./imagesTs/{test_id}.nii.gz"],
            })
        entry["dir"] = str(out.root / task.source)
        sources[task.source] = entry
        print(f"synth_mots: {task.source}: {n_cases} cases -> {out.root / task.source}", flush=True)
    out.finish(cases=cases, shape=list(shape), source_cases=per_source, kidney_lesions=kidney_lesions)
    return {"kind": "mots", "out_dir": str(out.root), "seed": seed, "shape": shape, "sources": sources,
            "files": sorted(out.files)}


# ----------------------------------------------------------------------------------------------------------
# KiTS19 / KiTS21 / KiTS23
# ----------------------------------------------------------------------------------------------------------

KITS_LAYOUTS = ("kits21", "kits19", "kits23")
#: where each layout's git clone keeps the case folders
KITS_CASE_ROOT = {"kits21": "kits21/data", "kits19": "data", "kits23": "dataset"}
#: first KiTS21 case id that is not a KiTS19 case
KITS21_FIRST_NEW_CASE = 210
_KITS_LABEL = {"kidney": 1, "tumor": 2, "cyst": 3}


def kits_case_ids(cases: int, layout: str = "kits21") -> List[int]:
    """Synthetic KiTS case ids.

    ``kits19``: 0, 1, 2, ...  ``kits21``/``kits23``: alternating between the KiTS19 range and the new cases,
    0, 210, 1, 211, 2, ... so that any run with ``cases >= 2`` has cases that overlap MOTS (ids < 210) and
    cases new in KiTS21 (ids >= 210), like the real release.
    """
    if layout not in KITS_LAYOUTS:
        raise InvalidValueError(f"layout must be one of {KITS_LAYOUTS}, got {layout!r}")
    if layout == "kits19":
        return list(range(cases))
    return [k // 2 if k % 2 == 0 else KITS21_FIRST_NEW_CASE + k // 2 for k in range(cases)]


def _annotator_variants(mask: np.ndarray, rng: np.random.Generator) -> List[np.ndarray]:
    """Three annotations of one instance: exact, one voxel larger, one voxel smaller (in random annotator order).

    Erosion is inside the mask and dilation contains it, so the voxel-wise majority vote of the three is the
    exact mask: the aggregated MAJ segmentation equals the phantom's truth.
    """
    variants = [mask, ndimage.binary_dilation(mask), ndimage.binary_erosion(mask)]
    return [variants[j] for j in rng.permutation(len(variants))]


def _kits_compose(kidneys: Sequence[np.ndarray], cysts: Sequence[np.ndarray], tumors: Sequence[np.ndarray],
                  shape: Tuple[int, ...], with_cysts: bool = True) -> np.ndarray:
    """Label map in the KiTS21 aggregation order: kidney (1), then cyst (3), then tumor (2) overwrite."""
    seg = np.zeros(shape, dtype=np.uint8)
    for m in kidneys:
        seg[m] = 1
    for m in cysts:
        seg[m] = 3 if with_cysts else 1
    for m in tumors:
        seg[m] = 2
    return seg


def synth_kits21(out_dir: PathLike, cases: int = 3, seed: int = 0, shape: Optional[Tuple[int, int, int]] = None,
                 layout: str = "kits21", groups: Optional[int] = None, lesions: str = "standard") -> dict:
    """Write synthetic KiTS cases in the layout of a KiTS21 (default), KiTS19 or KiTS23 git clone.

    ``kits21`` (labels 0 background, 1 kidney, 2 tumor, 3 cyst), as a clone of ``neheller/kits21`` after its
    ``get_imaging`` script ran (the cases live in the package folder, ``kits21/configuration/paths.py``)::

        kits21/data/case_XXXXX/imaging.nii.gz
        kits21/data/case_XXXXX/aggregated_{MAJ,OR,AND}_seg.nii.gz
        kits21/data/case_XXXXX/segmentations/{kidney,tumor,cyst}_instance-{k}_annotation-{a}.nii.gz

    The instance annotations are three per instance (exact, dilated, eroded by one voxel, in random order), so
    the majority vote (``aggregated_MAJ_seg``) is the phantom truth and OR/AND are unions/intersections. The clone
    has no ``segmentation_samples/`` (the official ``sample_segmentations.py`` writes them; ``evaluate kits21``
    builds the same samples in memory); ``groups=G`` also writes them as that script would, with G groups.

    ``kits19``: ``data/case_XXXXX/imaging.nii.gz + segmentation.nii.gz`` (labels 0, 1, 2; cysts are kidney).
    ``kits23``: ``dataset/case_XXXXX/imaging.nii.gz + segmentation.nii.gz`` (labels 0..3) and
    ``instances/{kidney,tumor,cyst}_instance-{k}_annotation-{a}.nii.gz``.

    All layouts store the KiTS axis order (first image axis = cranio-caudal, the coarse spacing) with a
    direction matrix that keeps the physical geometry right. Case ids come from :func:`kits_case_ids`
    (0, 210, 1, 211, ... for kits21/kits23); a case id gives the same scan as MOTS' ``KiTS19`` folder for
    the same seed and shape. Cysts: see :func:`kits_case_has_cyst`; ``lesions``: a :data:`KIDNEY_LESION_PROFILES`
    entry.

    Returns:
        ``{"kind", "layout", "out_dir", "seed", "shape", "cases", "kits19_overlap", "new_cases", "images",
        "labels", "files"}``; ``labels`` are the reference label maps (MAJ for kits21).
    """
    if layout not in KITS_LAYOUTS:
        raise InvalidValueError(f"layout must be one of {KITS_LAYOUTS}, got {layout!r}")
    cases = _check_count("cases", cases, 1, 2 * 90 if layout != "kits19" else KITS21_FIRST_NEW_CASE)
    if groups is not None:
        groups = _check_count("groups", groups, 1)
    _kidney_lesions(lesions)
    shape = _shape(shape)
    check_fits_in_memory(shape, BYTES_PER_VOXEL)
    out = _Output(out_dir, layout, seed)
    top = KITS_CASE_ROOT[layout]
    ids = kits_case_ids(cases, layout)
    images, labels = [], []
    for cid in ids:
        ph = kits_phantom(cid, seed, shape, lesions)
        case = f"{top}/case_{cid:05d}"
        images.append(str(out.image(f"{case}/imaging.nii.gz", ph.image, ph.geometry, slice_first=True)))
        inst = {"kidney": ph.instances["kidney"], "cyst": ph.instances["kidney_cyst"],
                "tumor": ph.instances["kidney_tumor"]}
        if layout == "kits19":
            seg = _kits_compose(inst["kidney"], inst["cyst"], inst["tumor"], shape, with_cysts=False)
            labels.append(str(out.image(f"{case}/segmentation.nii.gz", seg, ph.geometry, slice_first=True)))
            continue
        maj = _kits_compose(inst["kidney"], inst["cyst"], inst["tumor"], shape)
        rng = _case_rng(seed, _SEED_KITS, cid, 2)
        annos = {name: [_annotator_variants(m, rng) for m in masks] for name, masks in inst.items()}
        inst_dir = "instances" if layout == "kits23" else "segmentations"
        for name in ("kidney", "tumor", "cyst"):
            for k, variants in enumerate(annos[name], start=1):
                for a, m in enumerate(variants, start=1):
                    out.image(f"{case}/{inst_dir}/{name}_instance-{k}_annotation-{a}.nii.gz", m.astype(np.uint8),
                              ph.geometry, slice_first=True)
        if layout == "kits23":
            labels.append(str(out.image(f"{case}/segmentation.nii.gz", maj, ph.geometry, slice_first=True)))
            continue
        labels.append(str(out.image(f"{case}/aggregated_MAJ_seg.nii.gz", maj, ph.geometry, slice_first=True)))
        for agg, pick in (("OR", np.logical_or), ("AND", np.logical_and)):
            per_inst = {n: [pick.reduce(np.stack(v)) for v in annos[n]] for n in annos}
            seg = _kits_compose(per_inst["kidney"], per_inst["cyst"], per_inst["tumor"], shape)
            out.image(f"{case}/aggregated_{agg}_seg.nii.gz", seg, ph.geometry, slice_first=True)
        if groups is not None:
            _write_kits21_samples(out, case, groups)
    out.finish(layout=layout, cases=cases, shape=list(shape), groups=groups, lesions=lesions)
    print(f"synth_kits21: {cases} {layout} cases ({', '.join(f'case_{c:05d}' for c in ids)}) -> {out.root / top}",
          flush=True)
    return {"kind": layout, "layout": layout, "out_dir": str(out.root), "seed": seed, "shape": shape,
            "cases": [f"case_{c:05d}" for c in ids],
            "kits19_overlap": [f"case_{c:05d}" for c in ids if c < KITS21_FIRST_NEW_CASE],
            "new_cases": [f"case_{c:05d}" for c in ids if c >= KITS21_FIRST_NEW_CASE],
            "images": images, "labels": labels, "files": sorted(out.files)}


def _write_kits21_samples(out: _Output, case: str, groups: int) -> None:
    """``segmentation_samples/group_{g}/...`` as the official ``sample_segmentations.py`` writes them."""
    import SimpleITK as sitk

    from nnunet_transfer.data.kits_samples import build_segmentation, sample_segmentations

    for sample in sample_segmentations(out.root / case, groups):
        path = out.path(f"{case}/segmentation_samples/group_{sample.group}/{sample.name}")
        sitk.WriteImage(build_segmentation(sample), str(path))


# ----------------------------------------------------------------------------------------------------------
# Kvasir-SEG
# ----------------------------------------------------------------------------------------------------------

_ID_ALPHABET = np.array(list(string.ascii_lowercase + string.digits))


def kvasir_ids(cases: int, seed: int) -> List[str]:
    """Unique 25-character lowercase-alphanumeric ids like the real ones ('cju0qkwl35piu0993l0dewei2')."""
    rng = _case_rng(seed, _SEED_KVASIR, 1 << 20)
    ids: List[str] = []
    while len(ids) < cases:
        new = "cj" + "".join(_ID_ALPHABET[rng.integers(len(_ID_ALPHABET), size=23)])
        if new not in ids:
            ids.append(new)
    return ids


def _upsampled_noise(rng: np.random.Generator, coarse: Tuple[int, ...], size: Tuple[int, int]) -> np.ndarray:
    field = rng.uniform(-1.0, 1.0, size=coarse).astype(np.float32)
    zoom = [size[0] / coarse[0], size[1] / coarse[1]] + [1] * (len(coarse) - 2)
    return ndimage.zoom(field, zoom, order=1, mode="nearest", grid_mode=True)[: size[0], : size[1]]


def kvasir_image(rng: np.random.Generator, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """One endoscopy-like RGB image (uint8, H x W x 3) and its polyp mask (bool, H x W)."""
    h, w = size
    yy, xx = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32),
                         indexing="ij")
    r = np.sqrt(xx ** 2 + yy ** 2)
    base = np.array([rng.uniform(170, 210), rng.uniform(80, 110), rng.uniform(70, 100)], dtype=np.float32)
    img = base + 22.0 * _upsampled_noise(rng, (5, 5, 1), size) + 8.0 * _upsampled_noise(rng, (12, 12, 3), size)
    img *= np.clip(1.0 - 0.35 * r ** 2, 0.3, 1.0)[..., None]  # vignetting of the endoscope light

    # polyp: rotated ellipse with a wobbly border, dome shading, texture and a specular highlight
    cy, cx = rng.uniform(-0.4, 0.4, size=2)
    a, b = rng.uniform(0.22, 0.4), rng.uniform(0.2, 0.35)
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    phi = np.arctan2(v, u)
    phase3, phase5 = rng.uniform(0, 2 * np.pi, size=2)
    border = 1.0 + 0.1 * np.sin(3 * phi + phase3) + 0.05 * np.sin(5 * phi + phase5)
    mask = rho <= border
    dome = np.clip(1.0 - (rho / border) ** 2, 0.0, 1.0)
    polyp_tex = 10.0 * _upsampled_noise(rng, (16, 16, 1), size)
    lift = np.array([40.0, 45.0, 35.0], dtype=np.float32) + 30.0 * dome[..., None] + polyp_tex
    img = np.where(mask[..., None], img + lift, img)
    hl_y, hl_x = cy - 0.3 * b, cx + 0.2 * a
    img[(yy - hl_y) ** 2 + (xx - hl_x) ** 2 <= 0.06 ** 2] = 250.0

    img = ndimage.gaussian_filter(img, sigma=(0.6, 0.6, 0))
    img += rng.normal(0.0, 3.0, size=img.shape)
    img[r > 1.3] = 8.0  # black corners outside the round field of view
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def synth_kvasir(out_dir: PathLike, cases: int = 8, seed: int = 0, size: Tuple[int, int] = (64, 64)) -> dict:
    """Write a Kvasir-SEG-like dataset: ``images/{id}.jpg``, ``masks/{id}.jpg`` and ``kavsir_bboxes.json``.

    Images are RGB JPEGs of ``size = (height, width)`` pixels with one brighter, textured polyp on a pinkish
    mucosa texture. Masks are 0/255 RGB JPEGs like the real ones, so JPEG artefacts leave grey values near the
    border: readers must threshold (e.g. ``> 127``). ``kavsir_bboxes.json`` (the real file name, typo included)
    holds ``{id: {"height", "width", "bbox": [{"label": "polyp", "xmin", "ymin", "xmax", "ymax"}]}}``.

    Returns:
        ``{"kind", "out_dir", "seed", "size", "ids", "images", "masks", "files"}``.
    """
    from PIL import Image

    cases = _check_count("cases", cases)
    size = (int(size[0]), int(size[1]))
    if min(size) < 16:
        raise InvalidValueError(f"size (height, width) must be at least 16 pixels each, got {size}")
    check_fits_in_memory(size, BYTES_PER_PIXEL)
    out = _Output(out_dir, "kvasir", seed)
    ids = kvasir_ids(cases, seed)
    bboxes: Dict[str, dict] = {}
    images, masks = [], []
    for i, case_id in enumerate(ids):
        rgb, mask = kvasir_image(_case_rng(seed, _SEED_KVASIR, i), size)
        p_img = out.path(f"images/{case_id}.jpg")
        Image.fromarray(rgb, mode="RGB").save(p_img, format="JPEG", quality=90)
        p_mask = out.path(f"masks/{case_id}.jpg")
        m = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
        Image.fromarray(m, mode="RGB").save(p_mask, format="JPEG", quality=85)
        ys, xs = np.nonzero(mask)
        bboxes[case_id] = {"height": size[0], "width": size[1],
                           "bbox": [{"label": "polyp", "xmin": int(xs.min()), "ymin": int(ys.min()),
                                     "xmax": int(xs.max()), "ymax": int(ys.max())}]}
        images.append(str(p_img))
        masks.append(str(p_mask))
    out.json("kavsir_bboxes.json", bboxes)
    out.finish(cases=cases, size=list(size))
    print(f"synth_kvasir: {cases} images {size[0]}x{size[1]} -> {out.root}", flush=True)
    return {"kind": "kvasir", "out_dir": str(out.root), "seed": seed, "size": size, "ids": ids,
            "images": images, "masks": masks, "files": sorted(out.files)}

