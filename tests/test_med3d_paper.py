"""The Med3D paper's normalisation (per-volume percentile clip, then nnU-Net's per-volume z-score through
Med3DPlanner; the LiTS HU window) and its Adam fine-tuning recipe (1e-3 pretrained, 1e-2 from scratch)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization
from test_planning import make_raw_dataset, write_fingerprint

from nnunet_transfer.data.intensity_clip import clip_dataset, clip_volume
from nnunet_transfer.errors import NnUNetTransferError

DATASET_ID = 932


def _paper_normalisation(volume: np.ndarray) -> np.ndarray:
    """The paper's formula, written out: sort the values, truncate at the 0.5 / 99.5 percentiles, standardise."""
    values = np.sort(volume.ravel())
    low, high = np.percentile(values, 0.5), np.percentile(values, 99.5)
    v = np.minimum(np.maximum(volume, low), high)
    return (v - v.mean()) / v.std()


def test_clip_then_nnunet_zscore_is_the_papers_normalisation():
    rng = np.random.default_rng(0)
    volume = rng.normal(40, 10, (10, 20, 20)).astype(np.float32)
    volume[0, 0, :5] = 3000  # metal: outliers the clip removes
    volume[1, 1, :5] = -1000
    clipped = clip_volume(volume)
    assert clipped.max() == pytest.approx(np.percentile(volume, 99.5)) and clipped.max() < 100
    assert clipped.min() == pytest.approx(np.percentile(volume, 0.5)) and clipped.min() > -20
    assert np.array_equal(clipped[2:], np.clip(volume[2:], clipped.min(), clipped.max()))
    normalised = ZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(clipped.copy())
    np.testing.assert_allclose(normalised, _paper_normalisation(volume), atol=1e-4)
    # without the clip the outliers squeeze the tissue: a different result (the step is not a no-op)
    unclipped = ZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(volume.copy())
    assert np.abs(unclipped - normalised).max() > 0.5


def test_liver_window_and_integer_volumes():
    ct = np.array([[-1024, -300, -200, 0, 100, 250, 400, 3071]], dtype=np.int16)
    assert clip_volume(ct, window=(-200, 250)).tolist() == [[-200, -200, -200, 0, 100, 250, 250, 250]]
    assert clip_volume(ct).dtype == np.float32
    with pytest.raises(ValueError, match="two increasing"):
        clip_volume(ct, window=(250, -200))


@pytest.fixture
def med3d_dataset(tmp_path, monkeypatch):
    dirs = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        monkeypatch.setenv(name, str(dirs[name]))
    folder = make_raw_dataset(dirs["nnUNet_raw"], DATASET_ID, "Lung", n_cases=2, shape=(8, 16, 16),
                              spacing_zyx=(2.0, 1.0, 1.0))
    return dirs, folder


def test_clip_dataset_copies_labels_and_geometry_and_records_the_clip(med3d_dataset):
    dirs, folder = med3d_dataset
    target = dirs["nnUNet_raw"] / "Dataset933_LungClipped"
    clip_dataset(folder, target, window=(-200, 250))
    original = sitk.ReadImage(str(folder / "imagesTr" / "case_000_0000.nii.gz"))
    clipped = sitk.ReadImage(str(target / "imagesTr" / "case_000_0000.nii.gz"))
    assert clipped.GetSpacing() == original.GetSpacing() and clipped.GetOrigin() == original.GetOrigin()
    array = sitk.GetArrayFromImage(clipped)
    assert array.min() >= -200 and array.max() <= 250 and sitk.GetArrayFromImage(original).min() < -200
    assert (target / "labelsTr" / "case_000.nii.gz").read_bytes() == \
        (folder / "labelsTr" / "case_000.nii.gz").read_bytes()
    assert json.loads((target / "dataset.json").read_text())["nnunet_transfer"]["intensity_clip"] == \
        {"window": [-200.0, 250.0]}
    with pytest.raises(NnUNetTransferError, match="already exists"):
        clip_dataset(folder, target)
    # a folder of images to predict, through the command line
    subprocess.run([sys.executable, "-m", "nnunet_transfer.cli.main", "clip-intensities", str(folder / "imagesTr"),
                    str(dirs["nnUNet_raw"] / "predict_in"), "--percentiles", "0.5", "99.5"], check=True)
    assert sorted(p.name for p in (dirs["nnUNet_raw"] / "predict_in").iterdir()) == \
        ["case_000_0000.nii.gz", "case_001_0000.nii.gz"]


def test_med3d_planner_uses_per_volume_zscore_without_mask(med3d_dataset):
    from nnunet_transfer.planning import PLANNERS

    dirs, folder = med3d_dataset
    write_fingerprint(dirs["nnUNet_preprocessed"], folder, [(8, 16, 16)] * 2, [(2.0, 1.0, 1.0)] * 2)
    fingerprint = dirs["nnUNet_preprocessed"] / folder.name / "dataset_fingerprint.json"
    # a dataset whose nonzero crop is small: nnU-Net's default would normalise inside the mask only
    fingerprint.write_text(json.dumps(dict(json.loads(fingerprint.read_text()),
                                           median_relative_size_after_cropping=0.5)))
    planner = PLANNERS["Med3DPlanner"](DATASET_ID)
    # the dataset's channel is "CT": nnU-Net's planner would pick CTNormalization (dataset-wide statistics)
    assert planner.determine_normalization_scheme_and_whether_mask_is_used_for_norm() == \
        (["ZScoreNormalization"], [False])
    assert planner.plans_identifier == "nnUNetMed3DPlans"


def _trainer(cls, dirs, folder):
    from nnunet_transfer.planning import plan_experiment

    plans_file = dirs["nnUNet_preprocessed"] / folder.name / "nnUNetMed3DPlans.json"
    if not plans_file.is_file():
        write_fingerprint(dirs["nnUNet_preprocessed"], folder, [(8, 16, 16)] * 2, [(2.0, 1.0, 1.0)] * 2)
        plan_experiment(DATASET_ID, "Med3DPlanner")
    plans = json.loads(plans_file.read_text())
    trainer = cls(dict(plans, continue_training=False), "3d_fullres", 0,
                  json.loads((folder / "dataset.json").read_text()), device=torch.device("cpu"))
    trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1,
                                                         trainer.label_manager.num_segmentation_heads, True)
    return trainer, plans_file


def test_paper_adam_recipes(med3d_dataset, tmp_path):
    from nnunet_transfer.trainers import Med3DFinetuneTrainer_paperAdam, Med3DFinetuneTrainer_paperAdamScratch
    from nnunet_transfer.transfer.record import PretrainedRecord, write_record

    dirs, folder = med3d_dataset
    for cls, lr in ((Med3DFinetuneTrainer_paperAdam, 1e-3), (Med3DFinetuneTrainer_paperAdamScratch, 1e-2)):
        trainer, plans_file = _trainer(cls, dirs, folder)
        optimizer, _ = trainer.configure_optimizers()
        assert isinstance(optimizer, torch.optim.Adam)
        assert [g["lr"] for g in optimizer.param_groups] == [lr]  # one rate for every parameter
        assert trainer._load_pretrained() is None  # no weights given: nothing loaded, no error

    checkpoint = tmp_path / "weights.pth"
    torch.save({"network_weights": {"encoder.w": torch.zeros(1)}}, checkpoint)
    write_record(plans_file, "3d_fullres", PretrainedRecord(checkpoint=str(checkpoint)))
    scratch, _ = _trainer(Med3DFinetuneTrainer_paperAdamScratch, dirs, folder)
    with pytest.raises(NnUNetTransferError, match="trains from scratch"):
        scratch._load_pretrained()
