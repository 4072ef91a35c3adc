"""Kvasir-SEG converter on a synthetic Kvasir tree (JPEG images and masks) -> nnU-Net 2D RGB PNG dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from PIL import Image

from nnunet_transfer.data.convert_kvasir import convert_kvasir
from nnunet_transfer.data.errors import ConversionError
from nnunet_transfer.data.mots_tasks import DATASET_JSON_KEY
from nnunet_transfer.data.synthetic import synth_kvasir
from support.files import tree_digest


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("kvasir") / "Kvasir-SEG"
    synth_kvasir(src, cases=4, seed=0, size=(40, 48))
    return src


@pytest.fixture
def source_copy(tmp_path, source) -> Path:
    dst = tmp_path / "kvasir"
    shutil.copytree(source, dst)
    return dst


def test_convert_verified_by_nnunet_as_rgb_png(raw, source):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    before = tree_digest(source)
    out = convert_kvasir(source, 701)
    assert out == raw / "Dataset701_KvasirSEG"
    verify_dataset_integrity(str(out), num_processes=1)
    assert tree_digest(source) == before

    ds = json.loads((out / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "R", "1": "G", "2": "B"} and ds["file_ending"] == ".png"
    assert ds["labels"] == {"background": 0, "polyp": 1} and ds["numTraining"] == 4
    stems = sorted(p.stem for p in (source / "images").glob("*.jpg"))
    assert sorted(ds[DATASET_JSON_KEY]["source_case"]) == stems
    for stem in stems:
        rgb = np.asarray(Image.open(out / "imagesTr" / f"{stem}_0000.png"))
        np.testing.assert_array_equal(rgb, np.asarray(Image.open(source / "images" / f"{stem}.jpg").convert("RGB")))
        label = np.asarray(Image.open(out / "labelsTr" / f"{stem}.png"))
        mask = np.asarray(Image.open(source / "masks" / f"{stem}.jpg").convert("L"))
        np.testing.assert_array_equal(label, (mask >= 128).astype(np.uint8))
        assert set(np.unique(label)) == {0, 1}
    # nnU-Net's own 2D reader sees three input channels of shape (1, H, W)
    images, props = NaturalImage2DIO().read_images([str(out / "imagesTr" / f"{stems[0]}_0000.png")])
    assert images.shape == (3, 1, 40, 48)


def test_rerun_identical(raw, source):
    first = tree_digest(convert_kvasir(source, 702, num_workers=2))
    second = tree_digest(convert_kvasir(source, 702, force=True))
    assert first == second and len(first) == 9
    assert [p.name for p in raw.iterdir()] == ["Dataset702_KvasirSEG"]


def _first(folder: Path) -> Path:
    return sorted(folder.glob("*.jpg"))[0]


def _resize_mask(src: Path) -> None:
    path = _first(src / "masks")
    Image.open(path).resize((20, 20)).save(path, format="JPEG")


@pytest.mark.parametrize("damage, pattern", [
    (lambda s: _first(s / "masks").unlink(), r"mask .*masks/\w+\.jpg is missing for image"),
    (lambda s: _first(s / "images").write_bytes(b"\xff\xd8 not really a jpeg"), r"cannot read .*images/\w+\.jpg"),
    (_resize_mask, r"size mismatch between image .*\.jpg and mask .*\.jpg: 48x40 vs 20x20"),
    (lambda s: shutil.rmtree(s / "masks"), r"masks not found"),
    (lambda s: [p.unlink() for d in ("images", "masks") for p in (s / d).iterdir()], r"no images found in"),
], ids=["missing-mask", "unreadable", "size-mismatch", "no-masks-folder", "empty"])
def test_bad_input_raises_and_leaves_nothing(raw, source_copy, damage, pattern):
    damage(source_copy)
    with pytest.raises(ConversionError, match=pattern):
        convert_kvasir(source_copy, 703)
    assert not raw.exists() or not any(raw.iterdir())


def test_duplicate_id_refused_and_macos_forks_ignored(raw, source_copy):
    (source_copy / "images" / "._junk.jpg").write_bytes(b"resource fork")
    out = convert_kvasir(source_copy, 704)
    assert len(list((out / "imagesTr").iterdir())) == 4
    with pytest.raises(ConversionError, match="Dataset704_KvasirSEG"):
        convert_kvasir(source_copy, 704, name="Polyps")
