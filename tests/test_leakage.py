"""leakage-check: image-content comparison of a pretraining dataset with a fine-tuning dataset's validation folds,
the leakage-free splits and the record the fine-tuning trainers read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.cli.main import main
from nnunet_transfer.data.leakage import (RECORD_FILE, avoid_leakage, default_splits, leakage_warning,
                                              mots_kidney_splits)


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    return tmp_path


def volume(seed: int) -> sitk.Image:
    array = np.random.default_rng(seed).integers(-100, 300, (6, 10, 12)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.5))
    return image


def write_dataset(root: Path, dataset_id: int, cases: dict) -> Path:
    """cases: id -> image; labels are empty masks of the same geometry."""
    folder = root / "nnUNet_raw" / f"Dataset{dataset_id:03d}_D{dataset_id}"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for case, image in cases.items():
        sitk.WriteImage(image, str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
        label = sitk.Image(image.GetSize(), sitk.sitkUInt8)
        label.CopyInformation(image)
        sitk.WriteImage(label, str(folder / "labelsTr" / f"{case}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0,
                                                    "kidney": 1}, "numTraining": len(cases),
                                                    "file_ending": ".nii.gz"}))
    return folder


def test_renamed_recompressed_reoriented_duplicate_is_found(nnunet_dirs, capsys):
    write_dataset(nnunet_dirs, 801, {f"src_{i}": volume(i) for i in range(3)})
    # the same voxels of source case 1 under another name, as float32, in another orientation (other file bytes)
    duplicate = sitk.DICOMOrient(sitk.Cast(volume(1), sitk.sitkFloat32), "RAS")
    target = {f"case_{i:05d}": volume(100 + i) for i in range(10)}
    target["case_00004"] = duplicate
    write_dataset(nnunet_dirs, 802, target)

    assert main(["leakage-check", "-s", "801", "-t", "802"]) == 1
    out = capsys.readouterr().out
    fold = next(i for i, f in enumerate(default_splits(target)) if "case_00004" in f["val"])
    assert f"Dataset802_D802/case_00004 == Dataset801_D801/src_1   (validation case of fold(s) {fold})" in out
    assert "LEAKAGE: 1 validation case" in out
    record = json.loads((nnunet_dirs / "nnUNet_preprocessed" / "Dataset802_D802" / RECORD_FILE).read_text())
    assert record["overlap"] == {"case_00004": ["src_1"]}

    # the split written keeps the shared case in training in every fold; the other folds stay nnU-Net's
    overlap, splits_file = avoid_leakage(801, 802)
    splits = json.loads(splits_file.read_text())
    assert all("case_00004" not in f["val"] for f in splits)
    assert all("case_00004" in f["train"] for f in splits)
    default = default_splits(target)
    assert [f["val"] for i, f in enumerate(splits) if i != fold] == \
        [f["val"] for i, f in enumerate(default) if i != fold]
    assert main(["leakage-check", "-s", "801", "-t", "802"]) == 0  # reads the written splits_final.json
    assert "training only" in capsys.readouterr().out


def test_clean_pair_passes(nnunet_dirs, capsys):
    write_dataset(nnunet_dirs, 803, {f"src_{i}": volume(i) for i in range(3)})
    write_dataset(nnunet_dirs, 804, {f"case_{i:05d}": volume(200 + i) for i in range(5)})
    assert main(["leakage-check", "-s", "803", "-t", "804"]) == 0
    assert "no leakage" in capsys.readouterr().out


def test_trainer_warning_names_the_leaking_validation_cases(tmp_path):
    (tmp_path / RECORD_FILE).write_text(json.dumps({"source": "Dataset600_MOTS", "target": "Dataset601_KiTS21",
                                                    "overlap": {"case_00001": ["kidney_001"]}}))
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["case_00000"], "val": ["case_00001"]},
                                                            {"train": ["case_00001"], "val": ["case_00000"]}]))
    warning = leakage_warning(tmp_path, 0)
    assert "case_00001" in warning and "Dataset600_MOTS" in warning
    assert leakage_warning(tmp_path, 1) is None


def test_mots_kidney_split_from_dodnet_lists(tmp_path):
    lists = tmp_path / "MOTS"
    lists.mkdir()
    (lists / "MOTS_train.txt").write_text(
        "0123456_spacing_same/0Liver/imagesTr/liver_0.nii.gz 0123456_spacing_same/0Liver/labelsTr/liver_0.nii.gz\n"
        "0123456_spacing_same/1Kidney/origin/case_00000/imaging.nii.gz x\n"
        "0123456_spacing_same/1Kidney/origin/case_00002/imaging.nii.gz x\n")
    (lists / "MOTS_test.txt").write_text("0123456_spacing_same/1Kidney/origin/case_00001/imaging.nii.gz x\n")
    assert mots_kidney_splits(lists / "MOTS_test.txt") == [{"train": ["case_00000", "case_00002"],
                                                            "val": ["case_00001"]}]
    with pytest.raises(ValueError, match="case_00002"):
        mots_kidney_splits(lists / "MOTS_train.txt", target_cases=["case_00000", "case_00001"])
