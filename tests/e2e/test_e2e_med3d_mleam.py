"""End to end with the real nnU-Net commands: plan_arch -> nnUNetv2_train (Med3D, MLEAM) -> nnUNetv2_predict.

synth kits21 -> convert -> nnUNetv2_plan_and_preprocess -> plan_arch for med3d-resnet10 (+ a MedicalNet-format
file), plain + mleam and med3d-resnet10 + mleam (+ the same file), all reusing nnU-Net's preprocessed data -> one
epoch of two iterations of each trainer on CPU -> prediction of two images.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer.architectures.med3d import Med3DResNet
from nnunet_transfer.planning.plan_arch import plan_arch
from nnunet_transfer.transfer.weights import TransferReport
from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source

pytestmark = pytest.mark.slow

DATASET_ID, DATASET = 612, "Dataset612_KiTS21"
SHAPE = ("16", "48", "48")
TINY_MED3D = "Med3DFinetuneTrainer_tiny"
TINY_MLEAM = "Med3DMLEAMTrainer_tiny"
MED3D_PLANS, MLEAM_PLANS, MED3D_MLEAM_PLANS = ("nnUNetPlans_med3d-resnet10", "nnUNetPlans_mleam",
                                               "nnUNetPlans_med3d-resnet10_mleam")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = NnUNetWorkspace(tmp_path_factory.mktemp("med3d_mleam_ws"))
    # nnU-Net's final validation exports through a spawn pool of nnUNet_def_n_proc (default 8) workers, each
    # importing torch: minutes on a busy 2-core machine for one tiny validation case
    ws.env["nnUNet_def_n_proc"] = "1"
    ws.cli("synth", "kits21", ws.root / "src", "--cases", "5", "--seed", "7", "--shape", *SHAPE)
    ws.cli("convert", "kits21", ws.root / "src", "-d", DATASET_ID)
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres", "-np", "2")
    torch.manual_seed(0)
    weights = ws.root / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in Med3DResNet(depth=10).state_dict().items()}}, weights)

    folder = ws.preprocessed / DATASET
    before = sorted(p.name for p in folder.iterdir() if p.is_dir())
    mp = pytest.MonkeyPatch()
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        mp.setenv(var, ws.env[var])
    try:
        plan_arch(DATASET_ID, "med3d-resnet10", weights=str(weights))
        plan_arch(DATASET_ID, "plain", decoder="mleam")
        plan_arch(DATASET_ID, "med3d-resnet10", decoder="mleam", weights=str(weights))
    finally:
        mp.undo()
    # nnU-Net's preprocessed data is reused: no new data folder
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == before
    ws.write_trainers("tiny_med3d_mleam", [
        trainer_variant_source(TINY_MED3D, "Med3DFinetuneTrainer", base_module="nnunet_transfer.trainers.med3d"),
        trainer_variant_source(TINY_MLEAM, "MLEAMTrainer", base_module="nnunet_transfer.trainers.mleam"),
    ])
    return ws


def _predict_and_check_geometry(ws: NnUNetWorkspace, tmp_path: Path, trainer: str, plans: str) -> None:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    inputs = sorted((ws.raw / DATASET / "imagesTr").glob("*_0000.nii.gz"))[:2]
    for f in inputs:
        shutil.copy(f, images)
    out = tmp_path / f"pred_{plans}"
    ws.predict(images, out, DATASET_ID, "3d_fullres", trainer, ["0"], plans=plans)
    for f in inputs:
        image = sitk.ReadImage(str(f))
        pred = sitk.ReadImage(str(out / f.name.replace("_0000.nii.gz", ".nii.gz")))
        assert pred.GetSize() == image.GetSize()
        assert pred.GetSpacing() == pytest.approx(image.GetSpacing())
        assert pred.GetOrigin() == pytest.approx(image.GetOrigin())
        assert pred.GetDirection() == pytest.approx(image.GetDirection())
        assert set(sitk.GetArrayFromImage(pred).ravel().tolist()) <= {0, 1, 2, 3}


def _report(ws: NnUNetWorkspace, trainer: str, plans: str) -> TransferReport:
    return TransferReport.load(ws.model_folder(DATASET, trainer, "3d_fullres", plans) / "fold_0" /
                               "transfer_report.json")


def test_med3d_finetuning_loads_the_medicalnet_encoder_and_predicts(ws, tmp_path):
    log = ws.train(DATASET_ID, "3d_fullres", "0", TINY_MED3D, plans=MED3D_PLANS)
    report = _report(ws, TINY_MED3D, MED3D_PLANS)
    assert report.n_loaded == 72 and not [k for k in report.missing if k.startswith("encoder.")]
    assert all(k.startswith("encoder.") for k in report.loaded)
    assert "Pretrained weights:" in log
    _predict_and_check_geometry(ws, tmp_path, TINY_MED3D, MED3D_PLANS)


def test_mleam_on_the_plain_encoder_logs_edge_losses_and_predicts(ws, tmp_path):
    log = ws.train(DATASET_ID, "3d_fullres", "0", TINY_MLEAM, plans=MLEAM_PLANS)
    assert "train edge loss: " in log and "validation edge loss: " in log
    assert "no calls" not in log
    _predict_and_check_geometry(ws, tmp_path, TINY_MLEAM, MLEAM_PLANS)


def test_mleam_on_the_med3d_encoder_transfers_resumes_and_predicts(ws, tmp_path):
    log = ws.train(DATASET_ID, "3d_fullres", "0", TINY_MLEAM, plans=MED3D_MLEAM_PLANS)
    assert "train edge loss: " in log
    report = _report(ws, TINY_MLEAM, MED3D_MLEAM_PLANS)
    assert report.n_loaded == 72 and not [k for k in report.missing if k.startswith("encoder.")]
    # --c: the checkpoint (Adam or SGD state, the network) loads back; training is complete, validation runs again
    resumed = ws.train(DATASET_ID, "3d_fullres", "0", TINY_MLEAM, "--c", plans=MED3D_MLEAM_PLANS)
    assert "Traceback" not in resumed
    assert _report(ws, TINY_MLEAM, MED3D_MLEAM_PLANS).loaded == report.loaded
    _predict_and_check_geometry(ws, tmp_path, TINY_MLEAM, MED3D_MLEAM_PLANS)
