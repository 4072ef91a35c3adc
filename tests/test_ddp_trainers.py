"""Every DDP path of our trainers gives the one-process result: 2 gloo ranks on the CPU, global batch 4 split 2 + 2.

Each test runs a trainer's own ``train_step`` (and validation hooks) with real DDP wrapping in two ranks
(:mod:`support.ddp`) and the same trainer in this process on the whole batch, and requires the gradients, the
parameters after the step, the logged training loss and the validation values to agree within 1e-5 relative. The
batches are built so that the ranks differ in what our losses count (labelled channels, patches with a centre,
tasks present).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

from nnunet_transfer.architectures.localizer import LocalizerNetwork
from nnunet_transfer.data import mots_tasks
from nnunet_transfer.trainers.finetune import FineTuneTrainer
from nnunet_transfer.trainers.localization import VALIDATION_JSON, LocalizationPretrainTrainer
from support.ddp import GlooRanks, max_relative_error, reference_and_ranks

TOLERANCE = 1e-5
PATCH_3D = [8, 16, 16]
PATCH_2D = [32, 32]
CASES = ["case_a", "case_b", "case_c", "case_d"]


@pytest.fixture(scope="module")
def ranks():
    gloo = GlooRanks(2)
    yield gloo
    gloo.close()


# ----------------------------------------------------------------------------------------------------------------
# tiny plans, datasets and batches
# ----------------------------------------------------------------------------------------------------------------

def _architecture(ndim: int, network: str = "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                  stages: int = 3) -> dict:
    if ndim == 3:
        strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]][:stages]
        kernels = [[1, 3, 3]] + [[3, 3, 3]] * (stages - 1)
    else:
        strides = [[1, 1]] + [[2, 2]] * (stages - 1)
        kernels = [[3, 3]] * stages
    return {
        "network_class_name": network,
        "arch_kwargs": {
            "n_stages": stages, "features_per_stage": [4, 8, 16, 16][:stages],
            "conv_op": f"torch.nn.modules.conv.Conv{ndim}d", "kernel_sizes": kernels, "strides": strides,
            "n_conv_per_stage": [1] * stages, "n_conv_per_stage_decoder": [1] * (stages - 1), "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{ndim}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def _plans(dataset: str, configurations: dict) -> dict:
    return {
        "dataset_name": dataset, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 0.8, 0.5], "original_median_shape_after_transp": [8, 32, 32],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 3.0, "mean": 0.0, "median": 0.0, "min": -3.0, "percentile_00_5": -2.5,
                  "percentile_99_5": 2.5, "std": 1.0}},
        "configurations": configurations,
    }


def _configuration(ndim: int, batch_dice: bool, architecture: dict) -> dict:
    patch = PATCH_3D if ndim == 3 else PATCH_2D
    return {
        "data_identifier": f"nnUNetPlans_{ndim}d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 4,
        "patch_size": patch, "median_image_size_in_voxels": patch,
        "spacing": [3.0, 0.8, 0.5][-ndim:], "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False], "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": architecture, "batch_dice": batch_dice,
    }


def _dataset_folder(root, dataset: str, ndim: int, dataset_json: dict) -> str:
    """A preprocessed folder nnU-Net's ``initialize`` accepts (it only looks at the file type)."""
    base = root / "nnUNet_preprocessed"
    folder = base / dataset / f"nnUNetPlans_{ndim}d"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "placeholder.b2nd").write_bytes(b"")
    (base / dataset / "dataset.json").write_text(json.dumps(dataset_json))
    return str(base)


def _with_deep_supervision(trainer, target: torch.Tensor):
    scales = trainer._get_deep_supervision_scales()
    if scales is None:
        return target
    shape = target.shape[2:]
    return [F.interpolate(target.float(), size=[round(s * f) for s, f in zip(shape, scale)], mode="nearest-exact")
            for scale in scales]


MOTS_TASKS = {"case_a": 0, "case_b": 1, "case_c": 4, "case_d": 5}  # 2 + 2 labelled channels vs 1 + 1


def mots_dataset_json() -> dict:
    labels, order = mots_tasks.nnunet_region_labels()
    return {"channel_names": {"0": "CT"}, "labels": labels, "regions_class_order": order, "numTraining": 4,
            "file_ending": ".nii.gz", mots_tasks.DATASET_JSON_KEY: {"case_to_task": MOTS_TASKS}}


def mots_batch(trainer) -> dict:
    g = torch.Generator().manual_seed(1)
    data = torch.randn(4, 1, *PATCH_3D, generator=g)
    target = (torch.rand(4, mots_tasks.NUM_OUTPUT_CHANNELS, *PATCH_3D, generator=g) > 0.7).float()
    return {"data": data, "target": _with_deep_supervision(trainer, target), "keys": list(CASES)}


def label_batch(trainer) -> dict:
    """Labels 0-3 (background, kidney, tumour, cyst), 3-D."""
    g = torch.Generator().manual_seed(2)
    data = torch.randn(4, 1, *PATCH_3D, generator=g)
    target = torch.randint(0, 4, (4, 1, *PATCH_3D), generator=g).float()
    return {"data": data, "target": _with_deep_supervision(trainer, target), "keys": list(CASES)}


def binary_batch(trainer) -> dict:
    g = torch.Generator().manual_seed(3)
    data = torch.randn(4, 1, *PATCH_3D, generator=g)
    target = torch.zeros(4, 1, *PATCH_3D)
    target[:, :, 2:6, 4:12, 3:11] = 1
    target[1, :, :, :8] = 0
    return {"data": data + target, "target": _with_deep_supervision(trainer, target), "keys": list(CASES)}


def centre_batch(trainer) -> dict:
    """Rank 0 (samples 0, 1): two patches with a centre; rank 1 (samples 2, 3): one."""
    g = torch.Generator().manual_seed(4)
    target = torch.zeros(4, 1, *PATCH_2D)
    for i, (y, x) in enumerate([(5, 9), (20, 14), (12, 25)]):
        target[[0, 1, 3][i], 0, y:y + 6, x:x + 5] = 1
    data = torch.randn(4, 1, *PATCH_2D, generator=g) + target
    return {"data": data, "target": target, "keys": list(CASES)}


KITS_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3},
             "numTraining": 4, "file_ending": ".nii.gz"}
BINARY_JSON = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "prostate": 1}, "numTraining": 4,
               "file_ending": ".nii.gz"}
LOCALIZATION_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "target": 1}, "numTraining": 6,
                     "file_ending": ".nii.gz"}


# ----------------------------------------------------------------------------------------------------------------
# trainers under test (small, otherwise the shipped ones)
# ----------------------------------------------------------------------------------------------------------------

class TinyLocalizationTrainer(LocalizationPretrainTrainer):
    """Three batches of final validation; no dropout in the regressor (its random masks are drawn per process)."""

    final_validation_batches = 3

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision=True):
        return LocalizerNetwork.from_plans(configuration_manager, num_input_channels, num_output_channels,
                                           dropout=0.0)


class StagedUnfreezingTrainer(FineTuneTrainer):
    """Decoder first, everything from epoch 1; the stem never trains (never-trained parameters)."""

    unfreeze_schedule = ((0, ("decoder.",)), (1, ("encoder.stages.1", "encoder.stages.2")))



# ----------------------------------------------------------------------------------------------------------------
# comparison
# ----------------------------------------------------------------------------------------------------------------

def _assert_same(reference: dict, distributed: list) -> dict:
    """Gradients, parameter updates and logged losses of every rank equal the one-process run (the largest
    relative errors are printed: ``pytest -s`` shows them)."""
    errors = {"gradient": 0.0, "update": 0.0, "train_loss": 0.0}
    for rank in distributed:
        for step, (grads, update) in enumerate(zip(rank["gradients"], rank["updates"])):
            errors["gradient"] = max(errors["gradient"], max_relative_error(grads, reference["gradients"][step]))
            errors["update"] = max(errors["update"], max_relative_error(update, reference["updates"][step]))
        logged = np.asarray(rank["train_losses"])
        errors["train_loss"] = max(errors["train_loss"], float(np.max(
            np.abs(logged - reference["train_losses"]) / np.abs(reference["train_losses"]))))
    assert errors["gradient"] <= TOLERANCE, errors
    assert errors["update"] <= TOLERANCE, errors
    print(f"max relative error vs one process: {errors}")
    assert errors["train_loss"] <= TOLERANCE, errors
    return errors


def _assert_same_validation(reference: dict, distributed: list) -> None:
    for rank in distributed:
        for key, value in reference["validation"].items():
            np.testing.assert_allclose(rank["validation"][key], value, rtol=TOLERANCE, err_msg=key)


def _spec(tmp_path, trainer: str, dataset: str, dataset_json: dict, ndim: int, batch: str, *,
          batch_dice: bool = True, architecture: dict = None, **extra) -> dict:
    architecture = architecture or _architecture(ndim)
    configuration = f"{ndim}d"
    plans = _plans(dataset, {configuration: _configuration(ndim, batch_dice, architecture)})
    return dict(trainer=trainer, plans=plans, configuration=configuration, dataset_json=dataset_json,
                preprocessed=_dataset_folder(tmp_path, dataset, ndim, dataset_json), batch=batch, **extra)


# ----------------------------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_dice", [True, False], ids=["batch_dice", "per_sample_dice"])
def test_mots_partial_label_loss_with_different_labelled_channel_counts(ranks, tmp_path, batch_dice):
    spec = _spec(tmp_path, "nnunet_transfer.trainers.mots_pretrain:MOTSPretrainTrainer", "Dataset960_MOTS",
                 mots_dataset_json(), 3, "test_ddp_trainers:mots_batch", batch_dice=batch_dice, validate=True)
    reference, distributed = reference_and_ranks(ranks, tmp_path, **spec)
    _assert_same(reference, distributed)
    _assert_same_validation(reference, distributed)
    # the ranks' own losses differ (4 vs 2 labelled pairs); what nnU-Net logs is their mean: the global loss
    assert distributed[0]["step_losses"] != distributed[1]["step_losses"]


def test_med3d_branches_with_tasks_absent_from_a_rank_and_from_the_batch(ranks, tmp_path):
    spec = _spec(tmp_path, "nnunet_transfer.trainers.med3d_pretrain:Med3DPretrainTrainer", "Dataset961_MOTS",
                 mots_dataset_json(), 3, "test_ddp_trainers:mots_batch", epochs=(0, 1), validate=True)
    reference, distributed = reference_and_ranks(ranks, tmp_path, **spec)
    _assert_same(reference, distributed)
    _assert_same_validation(reference, distributed)
    # tasks 2, 3, 6 are in no sample: their branches get no step, in one process as in DDP
    initial = reference["parameters"][0]
    for task in (2, 3, 6):
        assert reference["gradients"][0][f"decoder.branches.{task}.weight"] is None
        assert distributed[0]["gradients"][0][f"decoder.branches.{task}.weight"] is None
    assert not torch.equal(initial["decoder.branches.0.weight"], reference["parameters"][1]["decoder.branches.0.weight"])


def test_localization_centre_loss_and_validation_with_different_numbers_of_centres(ranks, tmp_path):
    spec = _spec(tmp_path, "test_ddp_trainers:TinyLocalizationTrainer", "Dataset962_Localization",
                 LOCALIZATION_JSON, 2, "test_ddp_trainers:centre_batch", batch_dice=False, validate=True)
    reference, distributed = reference_and_ranks(ranks, tmp_path, **spec)
    _assert_same(reference, distributed)
    _assert_same_validation(reference, distributed)


def _preprocessed_localization_dataset(root, dataset: str, cases: int = 6) -> str:
    """nnU-Net's blosc2 format (its own save_case) of 2-slice volumes with a disc of label 1 per case."""
    rng = np.random.default_rng(0)
    base = root / "nnUNet_preprocessed"
    folder = base / dataset / "nnUNetPlans_2d"
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:40, :40]
    for i in range(cases):
        centre = rng.uniform(8, 32, size=2)
        seg = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= 16)[None, None].repeat(2, axis=1).astype(np.int16)
        data = (seg * 2.0 + rng.normal(0, 0.5, seg.shape)).astype(np.float32)
        properties = {"class_locations": {1: np.argwhere(seg > 0)}, "spacing": [1.0, 0.8, 0.5]}
        blocks, chunks = comp_blosc2_params(data.shape, PATCH_2D, data.itemsize)
        blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, PATCH_2D, seg.itemsize)
        nnUNetDatasetBlosc2.save_case(data, seg, properties, str(folder / f"case_{i}"), chunks=chunks, blocks=blocks,
                                      chunks_seg=chunks_seg, blocks_seg=blocks_seg)
    (base / dataset / "dataset.json").write_text(json.dumps(LOCALIZATION_JSON))
    (base / dataset / "splits_final.json").write_text(json.dumps(
        [{"train": [f"case_{i}" for i in range(cases - 3)], "val": [f"case_{i}" for i in range(cases - 3, cases)]}]))
    return str(base)


def test_localization_final_validation_is_the_one_process_result(ranks, tmp_path):
    dataset = "Dataset963_Localization"
    spec = _spec(tmp_path, "test_ddp_trainers:TinyLocalizationTrainer", dataset, LOCALIZATION_JSON, 2,
                 "test_ddp_trainers:centre_batch", batch_dice=False, final_validation=True,
                 output_file=VALIDATION_JSON, float64=False)
    spec["preprocessed"] = _preprocessed_localization_dataset(tmp_path / "data", dataset)
    reference, distributed = reference_and_ranks(ranks, tmp_path, **spec)
    single, gathered = reference["output_file"], distributed[0]["output_file"]
    assert "output_file" not in distributed[1]  # rank 0 writes
    assert gathered["num_patches"] == single["num_patches"] == 3 * 4
    assert [p["case"] for p in gathered["patches"]] == [p["case"] for p in single["patches"]]
    for ours, theirs in zip(gathered["patches"], single["patches"]):
        assert (ours["error_mm"] is None) == (theirs["error_mm"] is None)
        if theirs["error_mm"] is not None:
            assert ours["error_mm"] == pytest.approx(theirs["error_mm"], rel=TOLERANCE)
    assert gathered["mean_error_mm"] == pytest.approx(single["mean_error_mm"], rel=TOLERANCE)


def test_hec_loss(ranks, tmp_path):
    spec = _spec(tmp_path, "nnunet_transfer.trainers.kits:KiTS21HECTrainer", "Dataset964_KiTS", KITS_JSON, 3,
                 "test_ddp_trainers:label_batch", batch_dice=False, validate=True)
    reference, distributed = reference_and_ranks(ranks, tmp_path, **spec)
    _assert_same(reference, distributed)
    _assert_same_validation(reference, distributed)


def test_mleam_edge_loss(ranks, tmp_path):
    architecture = _architecture(3, "nnunet_transfer.architectures.mleam.MLEAMUNet", stages=4)
    spec = _spec(tmp_path, "nnunet_transfer.trainers.mleam:MLEAMTrainer", "Dataset965_Prostate", BINARY_JSON, 3,
                 "test_ddp_trainers:binary_batch", architecture=architecture, validate=True)
    reference, distributed = reference_and_ranks(ranks, tmp_path, **spec)
    _assert_same(reference, distributed)
    _assert_same_validation(reference, distributed)


def test_staged_unfreezing_updates_as_one_process(ranks, tmp_path):
    spec = _spec(tmp_path, "test_ddp_trainers:StagedUnfreezingTrainer", "Dataset966_Finetune", KITS_JSON, 3,
                 "test_ddp_trainers:label_batch", epochs=(0, 1, 2))
    reference, distributed = reference_and_ranks(ranks, tmp_path, **spec)
    _assert_same(reference, distributed)  # three steps across a stage change: no unused-parameter error either
    stage0, stage1 = reference["parameters"][0], reference["parameters"][1]
    stem = "encoder.stages.0.0.convs.0.conv.weight"
    decoder = "decoder.stages.0.convs.0.conv.weight"
    encoder = "encoder.stages.1.0.convs.0.conv.weight"
    for run in [reference] + distributed:
        assert run["gradients"][0][encoder] is None and run["gradients"][0][decoder] is not None  # stage 0
        assert run["gradients"][1][encoder] is not None  # stage 1
        assert all(step[stem] is None for step in run["gradients"])  # never trained
    assert not torch.equal(stage0[encoder], stage1[encoder])


def test_frozen_encoder_for_the_whole_run(ranks, tmp_path):
    spec = _spec(tmp_path, "nnunet_transfer.trainers.frozen_encoder:FrozenEncoderTrainer", "Dataset967_Frozen",
                 KITS_JSON, 3, "test_ddp_trainers:label_batch", epochs=(0, 1), validate=True)
    reference, distributed = reference_and_ranks(ranks, tmp_path, **spec)
    _assert_same(reference, distributed)
    _assert_same_validation(reference, distributed)
    for run in [reference] + distributed:
        assert all(g is None for n, g in run["gradients"][1].items() if n.startswith("encoder."))
