"""KiTS19/21/23 converter on synthetic sources in the three official layouts (2 cases each, tiny volumes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import SimpleITK as sitk

from nnunet_transfer.data.convert_kits import convert_kits, detect_kits_layout, list_mots_overlap
from nnunet_transfer.data.errors import ConversionError
from nnunet_transfer.data.mots_tasks import DATASET_JSON_KEY
from nnunet_transfer.data.synthetic import synth_kits21
from support.files import tree_digest

SHAPE = (8, 24, 24)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("kits")
    out = {}
    for layout in ("kits21", "kits19", "kits23"):
        synth_kits21(base / layout, cases=2, seed=0, shape=SHAPE, layout=layout)
        out[layout] = base / layout
    return out


@pytest.fixture
def kits21_copy(tmp_path, sources) -> Path:
    dst = tmp_path / "kits21"
    shutil.copytree(sources["kits21"], dst)
    return dst


def test_kits21_verified_by_nnunet_labels_kept_sources_unchanged(raw, sources):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    src = sources["kits21"]
    before = tree_digest(src)
    out = convert_kits(src, 601)
    assert out == raw / "Dataset601_KiTS21"
    verify_dataset_integrity(str(out), num_processes=1)
    assert tree_digest(src) == before

    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3} and ds["numTraining"] == 2
    meta = ds[DATASET_JSON_KEY]
    assert meta["kind"] == "kits" and meta["layout"] == "kits21"
    assert meta["mots_overlap"] == ["case_00000"]  # case_00210 is new in KiTS21
    for case in ("case_00000", "case_00210"):
        src_seg = sitk.ReadImage(str(src / "kits21" / "data" / case / "aggregated_MAJ_seg.nii.gz"))
        out_seg = sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(out_seg), sitk.GetArrayFromImage(src_seg))
        # the KiTS axis order is kept as SimpleITK reads it: same spacing/direction as the source
        assert out_seg.GetSpacing() == src_seg.GetSpacing() and out_seg.GetDirection() == src_seg.GetDirection()
        copied = (out / "imagesTr" / f"{case}_0000.nii.gz").read_bytes()
        assert copied == (src / "kits21" / "data" / case / "imaging.nii.gz").read_bytes()
    assert 3 in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr/case_00210.nii.gz"))))


def test_layout_detection_and_kits19_labels(raw, sources, tmp_path):
    assert detect_kits_layout(sources["kits21"])[0] == "kits21"
    assert detect_kits_layout(sources["kits19"])[0] == "kits19"
    assert detect_kits_layout(sources["kits23"]) == ("kits23", sources["kits23"] / "dataset")
    assert detect_kits_layout(sources["kits23"] / "dataset")[0] == "kits23"

    # KiTS19 with one of its unlabelled test cases (>= 210): labelled -> imagesTr, unlabelled -> imagesTs
    src = tmp_path / "kits19"
    shutil.copytree(sources["kits19"], src)
    (src / "data/case_00250").mkdir()
    shutil.copyfile(src / "data/case_00001/imaging.nii.gz", src / "data/case_00250/imaging.nii.gz")
    out = convert_kits(src, 602, name="KiTS19")
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "kidney": 1, "tumor": 2}
    assert ds[DATASET_JSON_KEY]["layout"] == "kits19" and ds[DATASET_JSON_KEY]["test_cases"] == ["case_00250"]
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["case_00250_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["case_00000.nii.gz", "case_00001.nii.gz"]

    out23 = convert_kits(sources["kits23"], 603, name="KiTS23")
    assert json.loads((out23 / "dataset.json").read_text())[DATASET_JSON_KEY]["layout"] == "kits23"


def test_kits19_label_with_cyst_value_is_rejected(raw, sources, tmp_path):
    src = tmp_path / "kits19"
    shutil.copytree(sources["kits19"], src)
    seg_path = src / "data/case_00001/segmentation.nii.gz"
    seg = sitk.ReadImage(str(seg_path))
    arr = sitk.GetArrayFromImage(seg)
    arr[0, 0, 0] = 3
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(seg)
    sitk.WriteImage(bad, str(seg_path))
    with pytest.raises(ConversionError, match=r"case_00001/segmentation\.nii\.gz contains values \[3\].*\[0, 1, 2\]"):
        convert_kits(src, 604, name="KiTS19")
    assert not raw.exists() or not any(raw.iterdir())


def test_mots_overlap_selection(raw, sources):
    assert list_mots_overlap(sources["kits21"]) == ["case_00000"]
    assert list_mots_overlap(sources["kits19"]) == ["case_00000", "case_00001"]
    out = convert_kits(sources["kits21"], 605, exclude_mots_overlap=True)
    meta = json.loads((out / "dataset.json").read_text())[DATASET_JSON_KEY]
    assert meta["selection"] == "exclude_mots_overlap" and meta["mots_overlap"] == []
    assert [p.name for p in (out / "labelsTr").iterdir()] == ["case_00210.nii.gz"]
    out = convert_kits(sources["kits21"], 606, name="KiTS21overlap", only_mots_overlap=True)
    assert [p.name for p in (out / "labelsTr").iterdir()] == ["case_00000.nii.gz"]
    with pytest.raises(ConversionError, match="exclude each other"):
        convert_kits(sources["kits21"], 607, exclude_mots_overlap=True, only_mots_overlap=True)
    with pytest.raises(ConversionError, match="no cases left"):
        convert_kits(sources["kits19"], 607, exclude_mots_overlap=True)
    assert not (raw / "Dataset607_KiTS21").exists()


def test_rerun_identical(raw, sources):
    first = tree_digest(convert_kits(sources["kits23"], 608, name="KiTS23"))
    second = tree_digest(convert_kits(sources["kits23"], 608, name="KiTS23", num_workers=2, force=True))
    assert first == second
    assert [p.name for p in raw.iterdir()] == ["Dataset608_KiTS23"]


def _shift_origin(path: Path) -> None:
    img = sitk.ReadImage(str(path))
    img.SetOrigin(tuple(o + 5.0 for o in img.GetOrigin()))
    sitk.WriteImage(img, str(path))


@pytest.mark.parametrize("damage, pattern", [
    (lambda s: (s / "kits21/data/case_00210/aggregated_MAJ_seg.nii.gz").unlink(),
     r"label .*case_00210/aggregated_MAJ_seg\.nii\.gz is missing"),
    (lambda s: (s / "kits21/data/case_00000/imaging.nii.gz").unlink(), r"image .*case_00000/imaging\.nii\.gz is missing"),
    (lambda s: (s / "kits21/data/case_00000/imaging.nii.gz").write_bytes(b"\x1f\x8b garbage"),
     r"cannot read .*case_00000/imaging\.nii\.gz.*SimpleITK"),
    (lambda s: _shift_origin(s / "kits21/data/case_00210/aggregated_MAJ_seg.nii.gz"),
     r"origin mismatch between image .*case_00210/imaging\.nii\.gz and label .*aggregated_MAJ_seg"),
    (lambda s: [shutil.rmtree(d) for d in (s / "kits21/data").iterdir()], r"no KiTS case folders \(case_XXXXX/\) found"),
], ids=["missing-label", "missing-image", "unreadable", "geometry", "empty"])
def test_bad_input_raises_and_leaves_nothing(raw, kits21_copy, damage, pattern):
    damage(kits21_copy)
    with pytest.raises(ConversionError, match=pattern):
        convert_kits(kits21_copy, 609)
    assert not raw.exists() or not any(raw.iterdir())


def test_duplicate_id_refused(raw, sources):
    (raw / "Dataset610_MOTS").mkdir(parents=True)
    with pytest.raises(ConversionError, match="Dataset610_MOTS"):
        convert_kits(sources["kits21"], 610)
    assert [p.name for p in raw.iterdir()] == ["Dataset610_MOTS"]


def test_kits21_git_clone_layout_and_release_layout(raw, sources, tmp_path, capsys):
    """The synthetic writer makes a clone (cases in kits21/data/, next to README.md and the package code);
    a release-style copy with the cases in data/ and the clone's inner kits21/ folder are found too."""
    from nnunet_transfer.cli.main import main

    clone = sources["kits21"]
    assert detect_kits_layout(clone) == ("kits21", clone / "kits21" / "data")
    assert detect_kits_layout(clone / "kits21") == ("kits21", clone / "kits21" / "data")
    assert main(["convert", "kits21", str(clone), "--list-mots-overlap", "-d", "611"]) == 0
    assert capsys.readouterr().out.split() == ["case_00000"]
    out = convert_kits(clone, 611)
    meta = json.loads((out / "dataset.json").read_text())[DATASET_JSON_KEY]
    assert meta["layout"] == "kits21" and meta["source_case"]["case_00210"] == "kits21/data/case_00210/imaging.nii.gz"
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["case_00000.nii.gz", "case_00210.nii.gz"]

    release = tmp_path / "release"
    shutil.copytree(clone / "kits21" / "data", release / "data")
    (release / "data" / "kits.json").write_text("[]\n")  # the clone's clinical data file beside the cases
    assert detect_kits_layout(release) == ("kits21", release / "data")
    assert list_mots_overlap(release) == ["case_00000"]


def test_no_case_folders_error_names_every_folder_searched(raw, tmp_path, capsys):
    from nnunet_transfer.cli.main import main

    clone = tmp_path / "kits21"
    (clone / "kits21" / "data").mkdir(parents=True)  # a clone without cases
    with pytest.raises(ConversionError) as err:
        list_mots_overlap(clone)
    for folder in ("dataset", "data", "kits21/data"):
        assert str(clone / folder) in str(err.value)
    assert f" or {clone}." in str(err.value)
    assert main(["convert", "kits21", str(clone), "-d", "612"]) == 1
    assert str(clone / "kits21" / "data") in capsys.readouterr().err
    with pytest.raises(ConversionError, match="does not exist"):
        detect_kits_layout(tmp_path / "missing")
