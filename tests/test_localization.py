"""Localisation pretraining: centre targets, the localiser network, the points converter and the nnU-Net trainer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, comp_blosc2_params
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_transfer.architectures.localizer import LocalizerNetwork, bottleneck_shape, pool_grid_for
from nnunet_transfer.data.point_labels import sphere_label_array, write_point_labels
from nnunet_transfer.losses.centre_regression import (CentreRegressionLoss, centre_errors_mm, centres_of_mass,
                                                      foreground_mask)
from nnunet_transfer.trainers.localization import VALIDATION_JSON, LocalizationPretrainTrainer, localization_score

DATASET = "Dataset990_Localization"
SPACING = {"2d": [0.8, 0.5], "3d_fullres": [3.0, 0.8, 0.5]}
PATCH = {"2d": [32, 32], "3d_fullres": [8, 16, 16]}
DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "target": 1}, "numTraining": 6,
                "file_ending": ".nii.gz"}


def _configuration(ndim: int) -> dict:
    name = "2d" if ndim == 2 else "3d_fullres"
    return {
        "data_identifier": f"nnUNetPlans_{name}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 4,
        "patch_size": PATCH[name],
        "median_image_size_in_voxels": PATCH[name],
        "spacing": SPACING[name],
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": f"torch.nn.modules.conv.Conv{ndim}d",
                "kernel_sizes": [[3] * ndim] * 3, "strides": [[1] * ndim, [2] * ndim, [2] * ndim],
                "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{ndim}d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False,
    }


def tiny_plans() -> dict:
    """nnU-Net plans with a 2d and a 3d_fullres configuration of a 3-stage PlainConvUNet (anisotropic spacing)."""
    return {
        "dataset_name": DATASET, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": SPACING["3d_fullres"],
        "original_median_shape_after_transp": [8, 32, 32],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 3.0, "mean": 0.0, "median": 0.0, "min": -3.0, "percentile_00_5": -2.5,
                  "percentile_99_5": 2.5, "std": 1.0}},
        "configurations": {"2d": _configuration(2), "3d_fullres": _configuration(3)},
    }


def configuration_manager(name: str):
    return PlansManager(tiny_plans()).get_configuration(name)


# ------------------------------------------------------------------------------------------------------------------
# centre targets
# ------------------------------------------------------------------------------------------------------------------

def test_centre_of_box_and_empty_patch():
    mask = torch.zeros(3, 10, 20, 8, dtype=torch.bool)
    mask[0, 2:5, 10:20, 0:2] = True          # centre index (3, 14.5, 0.5)
    mask[1, 9, 0, 7] = True                  # one corner voxel
    centres, valid = centres_of_mass(mask)
    assert valid.tolist() == [True, True, False]
    expected0 = [(3 + 0.5) / 10, (14.5 + 0.5) / 20, (0.5 + 0.5) / 8]
    assert torch.allclose(centres[0], torch.tensor(expected0))
    assert torch.allclose(centres[1], torch.tensor([9.5 / 10, 0.5 / 20, 7.5 / 8]))
    assert torch.allclose(centres[2], torch.full((3,), 0.5))


def test_centre_of_two_blobs_is_volume_weighted():
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 0:2, 0:2] = True   # 4 voxels, centre (0.5, 0.5)
    mask[0, 8:12, 8:12] = True  # 16 voxels, centre (9.5, 9.5)
    centres, _ = centres_of_mass(mask)
    com = (4 * 0.5 + 16 * 9.5) / 20
    assert torch.allclose(centres[0], torch.full((2,), (com + 0.5) / 16))


def test_foreground_mask_label_ignore_and_regions():
    labels = torch.tensor([0, 1, 2, 3, 255]).reshape(1, 1, 5, 1)
    assert foreground_mask(labels)[0, :, 0].tolist() == [False, True, True, True, True]
    assert foreground_mask(labels, ignore_label=255)[0, :, 0].tolist() == [False, True, True, True, False]
    assert foreground_mask(labels, label=2)[0, :, 0].tolist() == [False, False, True, False, False]
    regions = torch.zeros(1, 3, 4, 1)  # two regions + nnU-Net's ignore channel
    regions[0, 0, 1] = 1
    regions[0, 1, 2] = 1
    regions[0, 2, 3] = 1
    assert foreground_mask(regions, ignore_label=9, regions=True)[0, :, 0].tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="one channel"):
        foreground_mask(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="region"):
        foreground_mask(regions, label=1, regions=True)


def test_centre_error_in_mm_uses_anisotropic_spacing():
    shape, spacing = (10, 20, 40), (3.0, 0.8, 0.5)
    true = torch.tensor([[0.5, 0.5, 0.5]])
    # one voxel off along z (3 mm) and four voxels along x (2 mm)
    predicted = true + torch.tensor([[1 / 10, 0.0, 4 / 40]])
    error = centre_errors_mm(predicted, true, shape, spacing)
    assert error.item() == pytest.approx(math.hypot(3.0, 2.0), rel=1e-5)
    with pytest.raises(ValueError, match="same number of axes"):
        centre_errors_mm(predicted, true, shape, spacing[:2])


def test_loss_ignores_patches_without_foreground():
    target = torch.zeros(3, 1, 8, 8, dtype=torch.int16)
    target[0, 0, 2, 6] = 1
    target[2, 0, 4:6, 0:2] = 1
    prediction = torch.tensor([[0.2, 0.9], [9.0, 9.0], [0.5, 0.1]], requires_grad=True)
    loss = CentreRegressionLoss()(prediction, target)
    true = torch.tensor([[2.5 / 8, 6.5 / 8], [5 / 8, 1 / 8]])
    expected = ((prediction.detach()[[0, 2]] - true) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert prediction.grad[1].abs().sum() == 0 and prediction.grad[0].abs().sum() > 0
    empty = CentreRegressionLoss()(prediction, torch.zeros_like(target))
    assert empty.item() == 0.0 and empty.requires_grad


def test_localization_score_is_one_minus_normalised_error():
    assert localization_score(np.zeros(4), 3) == 1.0
    assert localization_score(np.full(4, math.sqrt(2) / 2), 2) == pytest.approx(0.5)
    assert localization_score(np.full(2, 5.0), 3) == 0.0


# ------------------------------------------------------------------------------------------------------------------
# network
# ------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["2d", "3d_fullres"])
def test_encoder_keys_match_the_segmentation_unet(name):
    cm = configuration_manager(name)
    localizer = LocalizerNetwork.from_plans(cm, num_input_channels=2, num_output_channels=3)
    unet = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                  cm.network_arch_init_kwargs_req_import, 2, 3, deep_supervision=False)
    ours = localizer.state_dict()
    theirs = {k: v for k, v in unet.state_dict().items() if k.startswith("encoder.")}
    assert {k: v.shape for k, v in ours.items() if k.startswith("encoder.")} == {k: v.shape for k, v in theirs.items()}
    assert all(k.startswith(("encoder.", "regressor.")) for k in ours)
    # the encoder transfers: loaded into the U-Net's encoder, both give the same features
    unet.encoder.load_state_dict({k[len("encoder."):]: v for k, v in ours.items() if k.startswith("encoder.")})
    x = torch.randn(2, 2, *cm.patch_size)
    localizer.eval(), unet.eval()
    assert torch.allclose(localizer.encoder(x)[-1], unet.encoder(x)[-1])
    out = localizer(x)
    assert out.shape == (2, len(cm.patch_size))


def test_pool_grid_keeps_position_and_caps_cells():
    assert bottleneck_shape([24, 64, 64], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]) == (6, 4, 4)
    assert pool_grid_for([24, 64, 64], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]], 4) == (4, 4, 4)
    assert pool_grid_for([5, 256, 256], [1, 2, 2, 2], 4) == (1, 4, 4)
    net = LocalizerNetwork.from_plans(configuration_manager("2d"), 1)
    assert net.regressor[-1].bias.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="2 spatial axes"):
        net(torch.zeros(1, 1, 4, 32, 32))


def _blob_batch(generator: torch.Generator, n: int, size: int = 32):
    grid = torch.arange(size, dtype=torch.float32)
    centres = torch.rand(n, 2, generator=generator) * (size - 12) + 6
    radius = torch.rand(n, generator=generator) * 2 + 2.5
    dist_sq = ((grid[None, :, None] - centres[:, 0, None, None]) ** 2
               + (grid[None, None, :] - centres[:, 1, None, None]) ** 2)
    labels = (dist_sq <= radius[:, None, None] ** 2)[:, None].to(torch.int16)
    images = labels.float() * 2.0 + 0.5 * torch.randn(labels.shape, generator=generator)
    return images, labels


def test_localizer_learns_blob_centres():
    """300 RMSprop steps on the trainer's loss take the centre error below half that of the best constant guess."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    cm = configuration_manager("2d")
    net = LocalizerNetwork.from_plans(cm, 1, dropout=0.0)
    loss_fn = CentreRegressionLoss()
    optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-3)
    val_images, val_labels = _blob_batch(generator, 64)
    true, valid = loss_fn.targets(val_labels)
    assert bool(valid.all())

    def mean_error_mm() -> float:
        net.eval()
        with torch.no_grad():
            return centre_errors_mm(net(val_images), true, cm.patch_size, SPACING["2d"]).mean().item()

    before = mean_error_mm()
    constant = centre_errors_mm(torch.full_like(true, 0.5), true, cm.patch_size, SPACING["2d"]).mean().item()
    net.train()
    for _ in range(300):
        images, labels = _blob_batch(generator, 16)
        loss = loss_fn(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)  # as nnU-Net's train step
        optimizer.step()
    after = mean_error_mm()
    assert after < 0.5 * min(before, constant), (before, constant, after)


# ------------------------------------------------------------------------------------------------------------------
# points -> sphere labels
# ------------------------------------------------------------------------------------------------------------------

def test_sphere_label_centre_of_mass_is_the_point():
    size_xyz, spacing_xyz, centre_xyz = (30, 20, 12), (0.5, 0.8, 3.0), (12.0, 7.0, 5.0)
    label = sphere_label_array(size_xyz, spacing_xyz, centre_xyz, radius_mm=4.0)
    assert label.shape == (12, 20, 30) and label.dtype == np.uint8
    idx = np.argwhere(label)  # z, y, x
    assert np.allclose(idx.mean(0), centre_xyz[::-1])
    extent_mm = (idx.max(0) - idx.min(0)) * np.asarray(spacing_xyz[::-1])
    assert np.all(extent_mm <= 8.0) and extent_mm[0] >= 6.0  # a 4 mm sphere, 3 voxels tall along z
    tiny = sphere_label_array(size_xyz, spacing_xyz, (3.2, 4.9, 0.1), radius_mm=0.01)
    assert np.argwhere(tiny).tolist() == [[0, 5, 3]]  # never empty: the nearest voxel


def _raw_dataset(root: Path, cases: dict) -> Path:
    """nnU-Net raw dataset with one 3D image per case: anisotropic, rotated, shifted geometry."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(DATASET_JSON))
    for case, (size_xyz, spacing, origin) in cases.items():
        image = sitk.Image(list(size_xyz), sitk.sitkFloat32)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
        sitk.WriteImage(image, str(root / "imagesTr" / f"{case}_0000.nii.gz"))
    return root


def test_write_point_labels_world_and_voxel(tmp_path):
    cases = {"case_a": ((20, 16, 10), (0.7, 0.9, 2.5), (10.0, -30.0, 5.0)),
             "case_b": ((18, 18, 8), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0))}
    dataset = _raw_dataset(tmp_path / "Dataset991_Points", cases)
    reference = sitk.ReadImage(str(dataset / "imagesTr" / "case_a_0000.nii.gz"))
    index_a = (9.0, 6.0, 4.0)  # x, y, z
    world = {"case_a": list(reference.TransformContinuousIndexToPhysicalPoint(index_a)), "case_b": [-8.0, 9.0, 12.0]}
    points = tmp_path / "points.json"
    points.write_text(json.dumps(world))
    written = write_point_labels(points, dataset, radius_mm=2.0)
    assert sorted(p.name for p in written) == ["case_a.nii.gz", "case_b.nii.gz"]
    label = sitk.ReadImage(str(dataset / "labelsTr" / "case_a.nii.gz"))
    assert label.GetSpacing() == reference.GetSpacing() and label.GetDirection() == reference.GetDirection()
    assert np.allclose(np.argwhere(sitk.GetArrayFromImage(label)).mean(0), index_a[::-1])
    label_b = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" / "case_b.nii.gz")))
    # direction maps index (i, j) to world (-j, i): world (-8, 9, 12) is index x=9, y=8, z=4
    assert np.allclose(np.argwhere(label_b).mean(0), [4, 8, 9])

    with pytest.raises(FileExistsError, match="overwrite"):
        write_point_labels(points, dataset)
    points.write_text(json.dumps({"case_a": [4, 6, 9], "case_b": [2, 3, 4]}))  # voxel (z, y, x)
    write_point_labels(points, dataset, radius_mm=2.0, coordinates="voxel", overwrite=True)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" / "case_a.nii.gz")))
    assert np.allclose(np.argwhere(label).mean(0), [4, 6, 9])


def test_write_point_labels_reports_bad_points(tmp_path):
    dataset = _raw_dataset(tmp_path / "Dataset992_Points", {"c1": ((8, 8, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))})
    points = tmp_path / "points.json"
    points.write_text(json.dumps({"c2": [1, 1, 1]}))
    with pytest.raises(ValueError, match=r"images without a point: \['c1'\]"):
        write_point_labels(points, dataset)
    points.write_text(json.dumps({"c1": [1, 1, 50]}))
    with pytest.raises(ValueError, match="outside the image"):
        write_point_labels(points, dataset, coordinates="voxel")
    points.write_text(json.dumps({"c1": [1, "a", 2]}))
    with pytest.raises(ValueError, match="finite numbers"):
        write_point_labels(points, dataset)


# ------------------------------------------------------------------------------------------------------------------
# trainer
# ------------------------------------------------------------------------------------------------------------------

class TinyLocalizationTrainer(LocalizationPretrainTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 3
        self.num_val_iterations_per_epoch = 2


def _preprocessed_2d_dataset(base: Path, cases: int = 6) -> None:
    """A preprocessed nnU-Net dataset (nnU-Net's blosc2 format, written with its own save_case) of 2-slice volumes
    with a disc of label 1 per case."""
    rng = np.random.default_rng(0)
    folder = base / DATASET / "nnUNetPlans_2d"
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:40, :40]
    for i in range(cases):
        centre = rng.uniform(8, 32, size=2)
        seg = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= 16)[None, None].repeat(2, axis=1).astype(np.int16)
        data = (seg * 2.0 + rng.normal(0, 0.5, seg.shape)).astype(np.float32)
        properties = {"class_locations": {1: np.argwhere(seg > 0)}, "spacing": [1.0, 0.8, 0.5]}
        blocks, chunks = comp_blosc2_params(data.shape, PATCH["2d"], data.itemsize)
        blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, PATCH["2d"], seg.itemsize)
        nnUNetDatasetBlosc2.save_case(data, seg, properties, str(folder / f"case_{i}"), chunks=chunks, blocks=blocks,
                                      chunks_seg=chunks_seg, blocks_seg=blocks_seg)
    base_dataset = base / DATASET
    (base_dataset / "dataset.json").write_text(json.dumps(DATASET_JSON))
    (base_dataset / "dataset_fingerprint.json").write_text("{}")
    (base_dataset / "splits_final.json").write_text(json.dumps(
        [{"train": [f"case_{i}" for i in range(cases - 2)], "val": [f"case_{cases - 2}", f"case_{cases - 1}"]}]))


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch) -> Path:
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    return tmp_path


def test_trainer_trains_validates_and_writes_results(nnunet_dirs):
    _preprocessed_2d_dataset(nnunet_dirs / "nnUNet_preprocessed")
    trainer = TinyLocalizationTrainer(dict(tiny_plans(), continue_training=False), "2d", 0, DATASET_JSON,
                                      device=torch.device("cpu"))
    trainer.run_training()
    trainer.perform_actual_validation()

    out = Path(trainer.output_folder)
    checkpoint = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    keys = checkpoint["network_weights"].keys()
    assert any(k.startswith("encoder.") for k in keys) and all(k.startswith(("encoder.", "regressor.")) for k in keys)
    assert checkpoint["trainer_name"] == "TinyLocalizationTrainer"
    assert isinstance(trainer.optimizer, torch.optim.RMSprop) and trainer.initial_lr == 1e-4
    score = trainer.logger.get_value("mean_fg_dice", step=-1)
    assert 0.0 <= score <= 1.0 and trainer.logger.get_value("dice_per_class_or_region", step=-1) == [score]
    log = next(out.glob("training_log_*.txt")).read_text()
    assert "Validation centre error" in log and " mm, median " in log

    result = json.loads((out / VALIDATION_JSON).read_text())
    assert result["num_patches"] == 2 * trainer.batch_size
    assert 0 < result["num_patches_with_foreground"] <= result["num_patches"]
    assert {p["case"] for p in result["patches"]} <= {"case_4", "case_5"}  # validation cases only
    errors = [p["error_mm"] for p in result["patches"] if p["error_mm"] is not None]
    assert result["mean_error_mm"] == pytest.approx(float(np.mean(errors)))
    assert result["spacing_mm"] == SPACING["2d"]
    assert not (out / "validation").exists()  # nnU-Net's segmentation validation did not run
    # seeded: the same patches and errors again
    again = trainer.evaluate_validation_patches(2, trainer.final_validation_seed)
    assert again["patches"] == result["patches"]


def test_trainer_rejects_labels_the_dataset_lacks(nnunet_dirs):
    class Label3Trainer(LocalizationPretrainTrainer):
        localization_label = 3

    with pytest.raises(ValueError, match="not a foreground label"):
        Label3Trainer(dict(tiny_plans(), continue_training=False), "2d", 0, DATASET_JSON, device=torch.device("cpu"))


def test_nnunet_predict_is_refused_with_an_explanation(nnunet_dirs, monkeypatch):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    ext = nnunet_dirs / "ext"
    ext.mkdir()
    (ext / "localization_trainers_for_test.py").write_text(
        "from nnunet_transfer.trainers.localization import LocalizationPretrainTrainer\n")
    monkeypatch.setenv("nnUNet_extTrainer", str(ext))
    model = nnunet_dirs / "model"
    (model / "fold_0").mkdir(parents=True)
    (model / "plans.json").write_text(json.dumps(tiny_plans()))
    (model / "dataset.json").write_text(json.dumps(DATASET_JSON))
    net = LocalizerNetwork.from_plans(configuration_manager("2d"), 1)
    torch.save({"network_weights": net.state_dict(), "trainer_name": "LocalizationPretrainTrainer",
                "init_args": {"configuration": "2d"}, "inference_allowed_mirroring_axes": (0, 1)},
               model / "fold_0" / "checkpoint_final.pth")
    predictor = nnUNetPredictor(device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="nnUNetv2_predict cannot use"):
        predictor.initialize_from_trained_model_folder(str(model), (0,))
    # outside nnU-Net's inference the same static method builds the localiser
    built = LocalizationPretrainTrainer.build_network_architecture(
        PlansManager(tiny_plans()), configuration_manager("2d"), 1, 2, False)
    assert isinstance(built, LocalizerNetwork)
