"""KiTS21's sampled reference segmentations, built from a case's instance annotations like the official sampler.

A KiTS21 case folder (``kits21/data/case_XXXXX/``) ships one binary file per annotated instance and annotator in
``segmentations/``: ``{kidney,tumor,cyst}_instance-K_annotation-A.nii.gz`` (older clones also hold ureter, artery
and vein files, which are not part of the label space). The official test-set evaluation does not score against
the majority vote but against *sampled* segmentations: ``kits21/annotation/sample_segmentations.py`` composes, per
case, ``NUMBER_OF_GROUPS = 5`` groups of full label maps, each picking one annotation per instance, and the case
score is the plain mean over every sampled map. Its output folder ``segmentation_samples/`` is not part of the
clone; this module rebuilds the same samples in memory (our own code, following that script step by step):

* instances of a region: the ``K`` of the files whose name starts with the region name (``name.split('_')[1]``),
  sorted, unique;
* annotations of an instance: the ``A`` of the files whose name starts with ``<region>_instance-K`` - a plain
  prefix match, so instance 1 also collects the annotation numbers of instances 10, 11, ... exactly as the
  official ``subfiles(prefix=...)`` does (harmless when every instance has the same annotators, as in KiTS21);
* samples per group: the smallest number of annotations of any instance of any region;
* randomness: ``numpy.random.RandomState(seed)`` with the case number as seed (the official
  ``generate_samples_for_all_cases`` passes ``caseid``); per group one ``randint(0, n)`` offset per instance,
  drawn for all kidney, then all tumor, then all cyst instances; sample ``i`` takes annotation
  ``(offset + i) % n`` of each instance;
* composition in ``LABEL_AGGREGATION_ORDER = (1, 3, 2)``: kidney, then cyst, then tumor overwrite; the first file
  read gives the geometry and its values equal to 1 become its label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from nnunet_transfer.errors import InvalidValueError, NotApplicableError

#: official ``NUMBER_OF_GROUPS`` (kits21/configuration/labels.py)
NUMBER_OF_GROUPS = 5
#: official ``LABEL_AGGREGATION_ORDER``: kidney, then cyst, then tumor (a later label overwrites an earlier one)
LABEL_AGGREGATION_ORDER: Tuple[int, ...] = (1, 3, 2)
REGION_LABELS: Dict[str, int] = {"kidney": 1, "tumor": 2, "cyst": 3}
#: the order in which the official sampler draws the per-instance offsets
_OFFSET_ORDER = ("kidney", "tumor", "cyst")
#: the order of the regions in the official sample file names
_NAME_ORDER = ("kidney", "cyst", "tumor")
INSTANCE_DIR = "segmentations"
_ENDING = ".nii.gz"
_INSTANCE_FILE = re.compile(r"^(kidney|tumor|cyst)_instance-(\d+)_annotation-(\d+)\.nii\.gz$")


@dataclass(frozen=True)
class SampledSegmentation:
    """One sampled reference: the instance annotation files composed into one label map."""

    group: int
    #: the case's ``segmentations/`` folder
    folder: Path
    #: the file name the official sampler gives it (``kidney_i1a2_i2a1_cyst_tumor_i1a3.nii.gz``)
    name: str
    #: region name -> annotation files, one per instance of the region
    files: Tuple[Tuple[str, Tuple[Path, ...]], ...]

    def files_of(self, region: str) -> Tuple[Path, ...]:
        return dict(self.files).get(region, ())


def _nii_files(folder: Path, prefix: str) -> List[str]:
    """Names of the ``.nii.gz`` files in ``folder`` starting with ``prefix``, sorted (``subfiles`` semantics)."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.startswith(prefix)
                  and p.name.endswith(_ENDING))


def instance_numbers(folder: Path, region: str) -> List[int]:
    """Instance numbers of ``region`` (official ``get_number_of_instances``)."""
    return sorted({int(name.split("_")[1].split("-")[-1]) for name in _nii_files(folder, region)})


def annotation_numbers(folder: Path, region: str, instance: int) -> List[int]:
    """Annotation numbers of one instance (official ``get_annotations``, prefix match included)."""
    names = _nii_files(folder, f"{region}_instance-{instance}")
    return sorted({int(name.split("_")[-1][: -len(_ENDING)].split("-")[-1]) for name in names})


def has_instance_annotations(case_dir: Path) -> bool:
    """True when ``case_dir/segmentations/`` holds at least one kidney, tumor or cyst instance annotation."""
    folder = case_dir / INSTANCE_DIR
    return folder.is_dir() and any(_INSTANCE_FILE.match(p.name) for p in folder.iterdir())


def case_seed(case_dir: Path) -> int:
    """The official seed of a case: its number (``case_00042`` -> 42)."""
    try:
        return int(case_dir.name.split("_")[-1])
    except ValueError:
        raise InvalidValueError(
            f"{case_dir}: expected a case folder named case_XXXXX (its number seeds the sampler)") from None


def sample_segmentations(case_dir: Path, num_groups: int = NUMBER_OF_GROUPS,
                         seed: Optional[int] = None) -> List[SampledSegmentation]:
    """The sampled references of one case, in the official order (group by group, sample by sample).

    ``seed`` defaults to the case number, as the official ``generate_samples_for_all_cases`` uses.
    Raises ``FileNotFoundError`` naming the folder when it has no kidney/tumor/cyst instance annotations, and
    when a selected annotation file does not exist (the official script would fail on it too).
    """
    folder = case_dir / INSTANCE_DIR
    if not has_instance_annotations(case_dir):
        raise FileNotFoundError(f"{folder} holds no kidney/tumor/cyst instance annotations "
                                f"(<region>_instance-K_annotation-A{_ENDING}); cannot sample reference segmentations")
    seed = case_seed(case_dir) if seed is None else seed
    instances = {r: instance_numbers(folder, r) for r in REGION_LABELS}
    annotations = {r: [annotation_numbers(folder, r, k) for k in instances[r]] for r in REGION_LABELS}
    per_region = [min(len(a) for a in annotations[r]) for r in REGION_LABELS if annotations[r]]
    samples_per_group = min(per_region)

    rs = np.random.RandomState(seed)
    samples: List[SampledSegmentation] = []
    for group in range(num_groups):
        offsets = {r: [rs.randint(0, len(a)) for a in annotations[r]] for r in _OFFSET_ORDER}
        for i in range(samples_per_group):
            name_parts: List[str] = []
            files: Dict[str, Tuple[Path, ...]] = {}
            for region in _NAME_ORDER:
                name_parts.append(region)
                chosen = []
                for j, instance in enumerate(instances[region]):
                    annos = annotations[region][j]
                    anno = annos[(offsets[region][j] + i) % len(annos)]
                    path = folder / f"{region}_instance-{instance}_annotation-{anno}{_ENDING}"
                    if not path.is_file():
                        raise FileNotFoundError(
                            f"{path} does not exist, but the official sampler selects it (annotation numbers of "
                            f"instance {instance} are found by the file-name prefix {region}_instance-{instance}); "
                            f"check {folder} for missing annotation files")
                    chosen.append(path)
                    name_parts.append(f"i{instance}a{anno}")
                files[region] = tuple(chosen)
            samples.append(SampledSegmentation(group, folder, "_".join(name_parts) + _ENDING,
                                               tuple((r, files[r]) for r in _NAME_ORDER)))
    return samples


def build_segmentation(sample: SampledSegmentation):
    """The label map of a sample as a SimpleITK image (official ``build_segmentation``)."""
    import SimpleITK as sitk

    seg: Optional[np.ndarray] = None
    first = None
    label_region = {v: k for k, v in REGION_LABELS.items()}
    for label in LABEL_AGGREGATION_ORDER:
        for path in sample.files_of(label_region[label]):
            try:
                image = sitk.ReadImage(str(path))
            except RuntimeError as err:
                raise NotApplicableError(f"could not read instance annotation {path}: {err}") from err
            array = sitk.GetArrayFromImage(image).astype(np.uint8)
            if seg is None:
                first, seg = image, array
                seg[seg == 1] = label
            else:
                if array.shape != seg.shape:
                    raise InvalidValueError(f"instance annotation {path} has shape {array.shape}, the case's first "
                                            f"annotation in {sample.folder} has {seg.shape}")
                seg[array == 1] = label
    if seg is None:
        raise InvalidValueError(f"sample {sample.name} of {sample.folder} has no annotation files")
    out = sitk.GetImageFromArray(seg)
    out.CopyInformation(first)
    return out
