"""Kvasir-SEG (``ROOT/images/*.jpg`` + ``ROOT/masks/*.jpg``, same stems) -> nnU-Net v2 raw dataset (2D).

nnU-Net's convention for 2D RGB natural images (its ``Dataset120_RoadSegmentation`` converter and the
dataset-format documentation) is one RGB PNG per case as channel ``_0000`` read by ``NaturalImage2DIO``, which
splits it into three input channels, with ``channel_names`` ``{"0": "R", "1": "G", "2": "B"}`` and
``file_ending ".png"``; labels are single-channel PNGs with values 0/1. RGB is the one exception nnU-Net makes
to "one file per channel", so writing three grey PNGs is not needed. JPEG is not accepted by nnU-Net (lossy),
so images are re-encoded losslessly as PNG, and the JPEG masks (whose compression leaves grey values at the
border) are thresholded at 128: ``mask >= 128`` is polyp (label 1).

Output: ``imagesTr/{stem}_0000.png`` (RGB, uint8), ``labelsTr/{stem}.png`` (uint8 0/1), dataset.json with
``labels {"background": 0, "polyp": 1}`` and ``dataset.json["nnunet_transfer"] = {"kind": "kvasir",
"source_case": {stem: "images/<file>"}}``. Kvasir-SEG has no official test split: every case is a training case.

``image_preprocessing`` applies a 2D paper's preprocessing while converting
(:mod:`nnunet_transfer.data.image_preprocessing`): ``localization-paper`` writes one grey channel (grey, normalised,
CLAHE, gamma), ``attention-paper`` resizes to 256 x 256; both name their channels ``rgb_to_0_1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from nnunet_transfer.data.errors import ConversionError, raise_if_problems
from nnunet_transfer.data.image_preprocessing import IMAGE_PREPROCESSINGS, localization_paper_image, resize_pair
from nnunet_transfer.data.mots_tasks import DATASET_JSON_KEY
from nnunet_transfer.data.raw_dataset import (flatten, is_hidden, relative_posix, run_cases, staged_dataset,
                                              target_dataset_folder, write_dataset_json)
from nnunet_transfer.errors import InvalidValueError

PathLike = Union[str, Path]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_THRESHOLD = 128
_CASE_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# a record of its own: it shares only the frozen-dataclass shape with data.kits_samples.SampledSegmentation
@dataclass(frozen=True)
class KvasirCase:
    """One image/mask pair and where it goes."""

    case_id: str
    image: Path
    mask: Path
    image_out: Path
    label_out: Path
    #: a name of IMAGE_PREPROCESSINGS, or None (the image as it is)
    image_preprocessing: Optional[str] = None


def _images_by_stem(folder: Path) -> dict:
    found: dict = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not is_hidden(f.name) and f.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(f.stem, []).append(f)
    return found


def _open_rgb_or_grey(path: Path, mode: str) -> Tuple[Optional[np.ndarray], Optional[str]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode)), None
    except (UnidentifiedImageError, OSError, ValueError) as e:  # Pillow's errors for unreadable/truncated files
        return None, f"cannot read {path} (is it a complete JPEG/PNG file?): Pillow: {e}"


def convert_kvasir_case(job: KvasirCase) -> List[str]:
    """Check one image/mask pair and write it as RGB PNG + 0/1 label PNG; returns the problems (empty = ok)."""
    from PIL import Image

    rgb, err_img = _open_rgb_or_grey(job.image, "RGB")
    grey, err_mask = _open_rgb_or_grey(job.mask, "L")
    problems = [e for e in (err_img, err_mask) if e]
    if problems:
        return problems
    if rgb.shape[:2] != grey.shape[:2]:
        return [f"size mismatch between image {job.image} and mask {job.mask}: "
                f"{rgb.shape[1]}x{rgb.shape[0]} vs {grey.shape[1]}x{grey.shape[0]} pixels (width x height)"]
    label = (grey >= MASK_THRESHOLD).astype(np.uint8)
    if job.image_preprocessing == "localization-paper":
        rgb = localization_paper_image(rgb)
    elif job.image_preprocessing == "attention-paper":
        rgb, label = resize_pair(rgb, label)
    job.image_out.parent.mkdir(parents=True, exist_ok=True)
    job.label_out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB" if rgb.ndim == 3 else "L").save(job.image_out, format="PNG")
    Image.fromarray(label, mode="L").save(job.label_out, format="PNG")
    return []


def convert_kvasir(source: PathLike, dataset_id: int, name: str = "KvasirSEG", num_workers: int = 1,
                   image_preprocessing: Optional[str] = None, force: bool = False) -> Path:
    """Convert Kvasir-SEG under ``source`` into ``$nnUNet_raw/DatasetXXX_Name`` (2D RGB PNG); returns the folder.

    ``image_preprocessing``: None or a name of :data:`~nnunet_transfer.data.image_preprocessing.IMAGE_PREPROCESSINGS`
    (module docstring).

    Every pair is checked (both files present and readable, equal size); all problems are reported together in
    one :class:`ConversionError`, and then nothing is written. An existing dataset of the same id and name is
    replaced only with ``force`` (:class:`~nnunet_transfer.data.existing_dataset.DatasetExistsError` otherwise).
    """
    if image_preprocessing is not None and image_preprocessing not in IMAGE_PREPROCESSINGS:
        raise InvalidValueError(f"unknown image preprocessing {image_preprocessing!r}; choose one of "
                                f"{sorted(IMAGE_PREPROCESSINGS)}")
    source = Path(source)
    target = target_dataset_folder(dataset_id, name, force)
    images_dir, masks_dir = source / "images", source / "masks"
    missing = [d for d in (images_dir, masks_dir) if not d.is_dir()]
    if missing:
        raise ConversionError(f"Kvasir-SEG folder(s) {', '.join(map(str, missing))} not found: expected "
                              f"{images_dir}/*.jpg and {masks_dir}/*.jpg (the extracted kvasir-seg.zip)")
    images, masks = _images_by_stem(images_dir), _images_by_stem(masks_dir)
    problems: List[str] = []
    pairs = []
    for stem in sorted(set(images) | set(masks)):
        if stem not in images:
            problems.append(f"mask {masks[stem][0]} has no image {images_dir / (stem + '.jpg')}")
            continue
        if stem not in masks:
            problems.append(f"mask {masks_dir / (stem + '.jpg')} is missing for image {images[stem][0]}")
            continue
        for what, files in (("image", images[stem]), ("mask", masks[stem])):
            if len(files) > 1:
                problems.append(f"more than one {what} file for case {stem}: {', '.join(map(str, files))}; keep one")
        if not _CASE_ID_OK.match(stem):
            problems.append(f"file name {images[stem][0].name} cannot be an nnU-Net case id; rename it using only "
                            f"letters, digits, '_', '-' and '.'")
            continue
        pairs.append((stem, images[stem][0], masks[stem][0]))
    if not pairs and not problems:
        problems.append(f"no images found in {images_dir} (expected *.jpg files with masks of the same name in "
                        f"{masks_dir})")
    print(f"Kvasir-SEG in {source}: {len(pairs)} image/mask pairs", flush=True)

    with staged_dataset(target, force) as stage:
        jobs = [KvasirCase(stem, img, mask, stage / "imagesTr" / f"{stem}_0000.png", stage / "labelsTr" / f"{stem}.png",
                           image_preprocessing) for stem, img, mask in pairs]
        problems += flatten(run_cases(convert_kvasir_case, jobs, num_workers, title=target.name))
        raise_if_problems(problems, f"converting Kvasir-SEG from {source} to {target.name} failed, nothing was written")
        write_dataset_json(
            stage, IMAGE_PREPROCESSINGS.get(image_preprocessing, {0: "R", 1: "G", 2: "B"}), {"background": 0, "polyp": 1}, len(jobs), ".png",
            dataset_name=target.name,
            description="Kvasir-SEG polyp segmentation (2D RGB), converted by nnunet-transfer",
            reference="https://datasets.simula.no/kvasir-seg/", license="see the Kvasir-SEG terms of use",
            **{DATASET_JSON_KEY: {"kind": "kvasir", "image_preprocessing": image_preprocessing,
                                  "source_case": {stem: relative_posix(img, source) for stem, img, _ in pairs}}})
    return target
