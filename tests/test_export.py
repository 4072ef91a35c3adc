"""Export a tiny trained nnU-Net model to a zip, install it elsewhere and predict with nnU-Net's predictor."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer.discovery import EXT_TRAINER_VARIABLE
from nnunet_transfer.inference.export import (
    MANIFEST_NAME,
    README_NAME,
    ChecksumMismatchError,
    export_model,
    find_trainer,
    install_and_predict,
    read_manifest,
)
from nnunet_transfer.pretrained.safe_load import UnsafeCheckpointError

DATASET = "Dataset987_TinyExport"
TRAINER = "nnUNetTrainer"
CONFIG = "3d_fullres"
MODEL_REL = f"{DATASET}/{TRAINER}__nnUNetPlans__{CONFIG}"
SHAPE = (12, 16, 16)  # z, y, x of the tiny test images
SPACING = (1.0, 1.0, 2.0)  # x, y, z (SimpleITK order)


def tiny_plans() -> dict:
    """nnU-Net plans of a 3-stage PlainConvUNet with 4/8/8 features: a real nnU-Net network, built in milliseconds."""
    conv3 = [[3, 3, 3]] * 3
    return {
        "dataset_name": DATASET,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [2.0, 1.0, 1.0],
        "original_median_shape_after_transp": list(SHAPE),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 3.0, "mean": 0.0, "median": 0.0, "min": -3.0, "percentile_00_5": -2.5,
                  "percentile_99_5": 2.5, "std": 1.0}},
        "configurations": {CONFIG: {
            "data_identifier": "nnUNetPlans_3d_fullres",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": [8, 16, 16],
            "median_image_size_in_voxels": list(SHAPE),
            "spacing": [2.0, 1.0, 1.0],
            "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": 3, "features_per_stage": [4, 8, 8], "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": conv3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                    "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                    "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": False,
        }},
    }


DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3},
                "numTraining": 2, "file_ending": ".nii.gz"}


def _write_tiny_model(results: Path, folds=(0, 1), trainer: str = TRAINER) -> Path:
    """A trained-model folder as nnUNetv2_train leaves it, with a real (untrained) network checkpoint."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    plans = tiny_plans()
    model_dir = results / MODEL_REL.replace(TRAINER, trainer)
    model_dir.mkdir(parents=True)
    (model_dir / "plans.json").write_text(json.dumps(plans))
    (model_dir / "dataset.json").write_text(json.dumps(DATASET_JSON))
    (model_dir / "dataset_fingerprint.json").write_text(json.dumps({"spacings": [[2.0, 1.0, 1.0]]}))
    arch = plans["configurations"][CONFIG]["architecture"]
    for fold in folds:
        torch.manual_seed(fold)
        net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     1, 4, deep_supervision=False)
        fold_dir = model_dir / f"fold_{fold}"
        (fold_dir / "validation").mkdir(parents=True)
        (fold_dir / "progress.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        (fold_dir / "validation" / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.5}}))
        torch.save({
            "network_weights": net.state_dict(),
            "init_args": {"plans": plans, "configuration": CONFIG, "fold": fold, "dataset_json": DATASET_JSON,
                          "device": torch.device("cpu")},
            "trainer_name": trainer,
            "inference_allowed_mirroring_axes": (0, 1, 2),
            "current_epoch": 1,
            # nnU-Net's logger stores numpy floats: the data-only check must accept them
            "logging": {"mean_fg_dice": [np.float64(0.5)], "train_losses": [np.float32(1.0)]},
        }, fold_dir / "checkpoint_final.pth")
    return model_dir


def _write_inputs(folder: Path) -> dict:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    geometry = {}
    for i, origin in enumerate([(0.0, 0.0, 0.0), (10.0, -5.0, 3.0)]):
        img = sitk.GetImageFromArray(rng.normal(size=SHAPE).astype(np.float32))
        img.SetSpacing(SPACING)
        img.SetOrigin(origin)
        sitk.WriteImage(img, str(folder / f"case{i}_0000.nii.gz"))
        geometry[f"case{i}"] = (SHAPE, SPACING, origin)
    return geometry


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    _write_tiny_model(root / "results")
    zip_path = export_model(DATASET, [CONFIG], TRAINER, folds=(0, 1), output_zip=root / "out" / "model.zip",
                            results_dir=root / "results")
    return root, zip_path


def test_zip_holds_model_manifest_and_readme(exported):
    root, zip_path = exported
    assert zip_path == (root / "out" / "model.zip").resolve() and zip_path.is_file()
    assert not list(zip_path.parent.glob("*.partial"))
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        for rel in ("plans.json", "dataset.json", "dataset_fingerprint.json", "fold_0/checkpoint_final.pth",
                    "fold_1/checkpoint_final.pth", "fold_1/validation/summary.json"):
            assert f"{MODEL_REL}/{rel}" in names
        assert {MANIFEST_NAME, README_NAME} <= names
        readme = zf.read(README_NAME).decode()
        ckpt0 = zf.read(f"{MODEL_REL}/fold_0/checkpoint_final.pth")
    manifest = read_manifest(zip_path)
    assert manifest["trainer"] == TRAINER and manifest["trainer_source"] == "nnunetv2"
    assert manifest["configurations"] == [CONFIG] and manifest["folds"] == [0, 1]
    assert set(manifest["checkpoint_sha256"]) == {f"{MODEL_REL}/fold_{f}/checkpoint_final.pth" for f in (0, 1)}
    assert manifest["checkpoint_sha256"][f"{MODEL_REL}/fold_0/checkpoint_final.pth"] == \
        hashlib.sha256(ckpt0).hexdigest()
    cmd = manifest["predict_commands"][CONFIG]
    assert cmd.startswith("nnUNetv2_predict ") and f"-d {DATASET} -c {CONFIG} -tr {TRAINER}" in cmd
    assert "-f 0 1 -chk checkpoint_final.pth" in cmd
    assert cmd in readme and "CASE_XXXX.nii.gz" in readme and "0000: CT" in readme


def test_install_and_predict_writes_segmentations_with_input_geometry(exported, tmp_path, monkeypatch):
    _, zip_path = exported
    monkeypatch.delenv("nnUNet_results", raising=False)
    monkeypatch.delenv(EXT_TRAINER_VARIABLE, raising=False)
    geometry = _write_inputs(tmp_path / "in")
    out = install_and_predict(zip_path, tmp_path / "in", tmp_path / "pred", device="cpu",
                              workspace=tmp_path / "ws", num_processes=0)
    assert out == (tmp_path / "pred").resolve()
    for case, (shape, spacing, origin) in geometry.items():
        seg = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert sitk.GetArrayFromImage(seg).shape == shape
        assert np.allclose(seg.GetSpacing(), spacing) and np.allclose(seg.GetOrigin(), origin)
        assert set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 1, 2, 3}
    # installed with nnU-Net's installer into the workspace; environment restored afterwards
    assert (tmp_path / "ws" / "nnUNet_results" / MODEL_REL / "fold_1" / "checkpoint_final.pth").is_file()
    assert "nnUNet_results" not in os.environ and EXT_TRAINER_VARIABLE not in os.environ


@pytest.mark.slow  # nnU-Net's worker processes start with "spawn": each re-imports torch and nnU-Net (~20 s)
def test_install_and_predict_uses_temporary_results_and_worker_processes(exported, tmp_path, monkeypatch):
    _, zip_path = exported
    monkeypatch.delenv("nnUNet_results", raising=False)
    _write_inputs(tmp_path / "in")
    out = install_and_predict(zip_path, tmp_path / "in", tmp_path / "pred", folds=[1], num_processes=1,
                              use_mirroring=False)
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case0.nii.gz", "case1.nii.gz"]


def test_corrupted_checkpoint_is_refused(exported, tmp_path):
    _, zip_path = exported
    bad_zip = tmp_path / "bad.zip"
    target = f"{MODEL_REL}/fold_1/checkpoint_final.pth"
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(bad_zip, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == target:
                data = data[:-10] + bytes(10)
            dst.writestr(item, data)
    _write_inputs(tmp_path / "in")
    with pytest.raises(ChecksumMismatchError, match="fold_1/checkpoint_final.pth.*corrupted"):
        install_and_predict(bad_zip, tmp_path / "in", tmp_path / "pred", workspace=tmp_path / "ws")
    assert not (tmp_path / "pred").exists()


def test_checkpoint_with_foreign_objects_is_refused_at_export(tmp_path):
    model_dir = _write_tiny_model(tmp_path / "results", folds=(0,))
    ckpt = model_dir / "fold_0" / "checkpoint_final.pth"
    content = torch.load(ckpt, weights_only=False)
    content["logging"]["callback"] = os.getcwd  # a pickled function: would run code on a full unpickle
    torch.save(content, ckpt)
    with pytest.raises(UnsafeCheckpointError, match="weights_only=True"):
        export_model(DATASET, [CONFIG], TRAINER, folds=(0,), output_zip=tmp_path / "m.zip",
                     results_dir=tmp_path / "results")
    assert not (tmp_path / "m.zip").exists()


def test_export_reports_missing_files_and_unknown_trainers(tmp_path):
    model_dir = _write_tiny_model(tmp_path / "results", folds=(0,))
    with pytest.raises(FileNotFoundError, match="fold_1"):
        export_model(DATASET, [CONFIG], TRAINER, folds=(0, 1), output_zip=tmp_path / "m.zip",
                     results_dir=tmp_path / "results")
    (model_dir / "fold_0" / "validation" / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="--val"):
        export_model(DATASET, [CONFIG], TRAINER, folds=(0,), output_zip=tmp_path / "m.zip",
                     results_dir=tmp_path / "results")
    with pytest.raises(LookupError, match="NoSuchTrainerXYZ"):
        export_model(DATASET, [CONFIG], "NoSuchTrainerXYZ", folds=(0,), output_zip=tmp_path / "m.zip",
                     results_dir=tmp_path / "results")


def test_our_trainers_are_found_through_the_ext_trainer_folder(monkeypatch):
    monkeypatch.delenv(EXT_TRAINER_VARIABLE, raising=False)
    info = find_trainer("MOTSPretrainTrainer")
    assert info.source == "nnunet_transfer" and info.needs_nnunet_transfer
    assert info.module.startswith("nnunet_transfer.trainers")
    assert EXT_TRAINER_VARIABLE not in os.environ  # set only while looking up, then restored


def test_custom_trainer_is_exported_with_a_clear_warning(tmp_path, monkeypatch):
    ext = tmp_path / "my_trainers"
    ext.mkdir()
    (ext / "tiny_custom_trainer.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n"
        "class TinyCustomTrainerXYZ(nnUNetTrainer):\n    pass\n")
    monkeypatch.setenv(EXT_TRAINER_VARIABLE, str(ext))
    _write_tiny_model(tmp_path / "results", folds=(0,), trainer="TinyCustomTrainerXYZ")
    with pytest.warns(UserWarning, match="ship it separately"):
        zip_path = export_model(DATASET, [CONFIG], "TinyCustomTrainerXYZ", folds=[0], output_zip=tmp_path / "m.zip",
                                results_dir=tmp_path / "results")
    manifest = read_manifest(zip_path)
    assert manifest["trainer_source"] == "external" and manifest["trainer_module"] == "tiny_custom_trainer"
    with zipfile.ZipFile(zip_path) as zf:
        assert "NOT in this zip" in zf.read(README_NAME).decode()
    assert os.environ[EXT_TRAINER_VARIABLE] == str(ext)  # the caller's value is restored


def test_zip_without_manifest_is_rejected(tmp_path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("Dataset001_X/readme.txt", "x")
    with pytest.raises(ValueError, match="not exported by nnunet-transfer"):
        read_manifest(plain)
