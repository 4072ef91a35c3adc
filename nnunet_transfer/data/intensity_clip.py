"""Per-volume intensity clipping in front of nnU-Net's normalisation (the Med3D paper's first normalisation step).

Med3D (paper med3d) sorts the values of each volume, truncates them to its 0.5 and 99.5 percentiles, then
standardises the volume with its own mean and SD; for LiTS it windows CT to -200..250 HU instead. nnU-Net has the
per-volume z-score (``ZScoreNormalization``; :class:`~nnunet_transfer.planning.paper_planners.Med3DPlanner` selects
it for every channel, over the whole volume) but no per-volume percentile clip, and it resolves normalisation
schemes and preprocessors only inside its own package. So the clip is applied to the images before nnU-Net sees
them: :func:`clip_dataset` writes a clipped copy of an nnU-Net raw dataset (or of a folder of images to predict),
geometry and labels unchanged. Clip here + z-score in nnU-Net is the paper's normalisation, and ``nnUNetv2_predict``
gets the same once its input folder went through the same command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from nnunet_transfer.data.existing_dataset import refuse_to_replace
from nnunet_transfer.data.mots_tasks import DATASET_JSON_KEY
from nnunet_transfer.data.raw_dataset import is_hidden, staged_dataset
from nnunet_transfer.errors import InvalidValueError

__all__ = ["MED3D_PERCENTILES", "MED3D_LIVER_WINDOW", "clip_volume", "clip_dataset"]

PathLike = Union[str, Path]

#: the Med3D paper's per-volume clip
MED3D_PERCENTILES: Tuple[float, float] = (0.5, 99.5)
#: the Med3D paper's CT window of the LiTS experiment, in HU
MED3D_LIVER_WINDOW: Tuple[float, float] = (-200.0, 250.0)
#: image folders of an nnU-Net raw dataset that hold images (every other file is copied unchanged)
IMAGE_FOLDERS = ("imagesTr", "imagesTs")


def _bounds(percentiles: Optional[Sequence[float]], window: Optional[Sequence[float]]) -> Tuple[str, Tuple[float, ...]]:
    if (percentiles is None) == (window is None):
        raise InvalidValueError("give exactly one of percentiles (per-volume clip) and window (fixed bounds)")
    kind, values = ("percentiles", percentiles) if percentiles is not None else ("window", window)
    values = tuple(float(v) for v in values)
    if len(values) != 2 or not values[0] < values[1]:
        raise InvalidValueError(f"{kind} must be two increasing numbers, got {list(values)}")
    if kind == "percentiles" and not (0 <= values[0] and values[1] <= 100):
        raise InvalidValueError(f"percentiles must lie in [0, 100], got {list(values)}")
    return kind, values


def clip_volume(volume: np.ndarray, percentiles: Optional[Sequence[float]] = MED3D_PERCENTILES,
                window: Optional[Sequence[float]] = None) -> np.ndarray:
    """``volume`` truncated to its own ``percentiles`` (all voxels count) or to the fixed ``window``; floating
    volumes keep their dtype, integer volumes become float32 (a percentile lies between two values)."""
    kind, (low, high) = _bounds(percentiles if window is None else None, window)
    if kind == "percentiles":
        low, high = np.percentile(volume, [low, high])
    dtype = volume.dtype if np.issubdtype(volume.dtype, np.floating) else np.float32
    return np.clip(volume.astype(dtype, copy=False), low, high).astype(dtype, copy=False)


def _clip_file(source: Path, target: Path, percentiles, window) -> None:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(source))
    clipped = sitk.GetImageFromArray(clip_volume(sitk.GetArrayFromImage(image), percentiles, window))
    clipped.CopyInformation(image)
    sitk.WriteImage(clipped, str(target))


def _image_files(folder: Path, file_ending: str):
    return sorted(f for f in folder.iterdir() if f.is_file() and not is_hidden(f.name) and f.name.endswith(file_ending))


def clip_dataset(source: PathLike, target: PathLike, percentiles: Optional[Sequence[float]] = None,
                 window: Optional[Sequence[float]] = None, file_ending: Optional[str] = None,
                 force: bool = False) -> Path:
    """Write ``target``: ``source`` with every image clipped per volume (``percentiles``, default the paper's 0.5 and
    99.5) or to a fixed ``window``.

    ``source`` is an nnU-Net raw dataset folder (``dataset.json``; ``imagesTr``/``imagesTs`` are clipped, everything
    else is copied, ``dataset.json`` records the clip) or a plain folder of images to predict (``file_ending``,
    default ``.nii.gz``). ``target`` is replaced only with ``force``; it is written completely or not at all.
    """
    source, target = Path(source), Path(target)
    if percentiles is None and window is None:
        percentiles = MED3D_PERCENTILES
    kind, values = _bounds(percentiles, window)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder (an nnU-Net raw dataset or a folder of images)")
    if source.resolve() == target.resolve():
        raise InvalidValueError(f"target {target} is the source; give a new folder")
    refuse_to_replace(target, force)
    dataset_json_file = source / "dataset.json"
    dataset_json = json.loads(dataset_json_file.read_text()) if dataset_json_file.is_file() else None
    ending = file_ending or (dataset_json or {}).get("file_ending", ".nii.gz")
    clip_kwargs = {"percentiles": values if kind == "percentiles" else None,
                   "window": values if kind == "window" else None}
    clipped = 0
    with staged_dataset(target) as stage:
        if dataset_json is None:
            for f in _image_files(source, ending):
                _clip_file(f, stage / f.name, **clip_kwargs)
                clipped += 1
        else:
            for entry in sorted(source.iterdir()):
                if is_hidden(entry.name) or entry.name == "dataset.json":
                    continue
                if entry.is_dir() and entry.name in IMAGE_FOLDERS:
                    (stage / entry.name).mkdir()
                    for f in _image_files(entry, ending):
                        _clip_file(f, stage / entry.name / f.name, **clip_kwargs)
                        clipped += 1
                elif entry.is_dir():
                    shutil.copytree(entry, stage / entry.name, symlinks=False)
                else:
                    shutil.copy2(entry, stage / entry.name)
            record = dict(dataset_json.get(DATASET_JSON_KEY, {}), intensity_clip={kind: list(values)})
            (stage / "dataset.json").write_text(json.dumps(dict(dataset_json, **{DATASET_JSON_KEY: record}),
                                                           indent=2))
        if clipped == 0:
            raise FileNotFoundError(f"no images ending in {ending!r} found in {source}"
                                    + (f"/{{{','.join(IMAGE_FOLDERS)}}}" if dataset_json is not None else ""))
    print(f"clipped {clipped} images ({kind} {list(values)}) -> {target}")
    return target
