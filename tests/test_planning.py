"""ResUNetASPPPlanner and plan_experiment on synthetic nnU-Net raw datasets.

nnunetv2 2.8.1 reads nnUNet_raw/nnUNet_preprocessed from the environment each time a path is used, so the
tests point them into tmp_path with monkeypatch. The fast tests write the dataset fingerprint themselves (the
planner only reads spacings, shapes and intensities from it); the slow test runs nnU-Net's real fingerprint
extraction and preprocessing (process pools, tens of seconds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer.architectures.res_unet_aspp import PAPER_ENCODER_BLOCKS, ResUNetASPP
from nnunet_transfer.planning import PLANNERS, ResUNetASPPPlanner, plan_experiment, resolve_planner
from nnunet_transfer.planning.res_unet_aspp_planner import estimate_conv_feature_map_elements

CLASS_PATH = "nnunet_transfer.architectures.res_unet_aspp.ResUNetASPP"
LABELS = {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3}


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch) -> Dict[str, Path]:
    dirs = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        monkeypatch.setenv(name, str(dirs[name]))
    return dirs


def make_raw_dataset(raw: Path, dataset_id: int, name: str, n_cases: int = 4, shape=(32, 48, 48),
                     spacing_zyx=(4.0, 1.0, 1.0), num_training: int = None) -> Path:
    """A tiny CT-like nnU-Net raw dataset (SimpleITK NIfTI), one box-shaped kidney with tumor and cyst per case."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    folder = raw / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(dataset_id)
    z, y, x = shape
    for i in range(n_cases):
        seg = np.zeros(shape, np.uint8)
        seg[z // 4: 3 * z // 4, y // 5: 3 * y // 5, x // 4: 3 * x // 4] = 1
        seg[z // 3: z // 2, y // 4: y // 2, x // 3: x // 2] = 2
        seg[z // 2: 2 * z // 3, y // 3: y // 2, x // 2: 2 * x // 3] = 3
        img = (rng.normal(-100, 50, shape) + 150 * seg).astype(np.float32)
        for arr, path in ((img, folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz"),
                          (seg, folder / "labelsTr" / f"case_{i:03d}.nii.gz")):
            image = sitk.GetImageFromArray(arr)
            image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
            sitk.WriteImage(image, str(path))
    generate_dataset_json(str(folder), {0: "CT"}, LABELS, num_training or n_cases, ".nii.gz")
    return folder


def write_fingerprint(preprocessed: Path, dataset_folder: Path, shapes: Sequence[Sequence[int]],
                      spacings: Sequence[Sequence[float]]) -> None:
    """What nnUNetv2_extract_fingerprint writes (the fields the planners read), without the process pool."""
    out = preprocessed / dataset_folder.name
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = {
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 400.0, "mean": 60.0, "median": 55.0, "min": -300.0, "percentile_00_5": -150.0,
            "percentile_99_5": 300.0, "std": 80.0}},
        "median_relative_size_after_cropping": 1.0,
        "shapes_after_crop": [list(s) for s in shapes],
        "spacings": [list(s) for s in spacings],
    }
    (out / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))


def ds_target_shapes(patch, pool_op_kernel_sizes):
    scales = list(list(i) for i in 1 / np.cumprod(np.vstack(pool_op_kernel_sizes), axis=0))[:-1]
    return [tuple(round(p * s) for p, s in zip(patch, scale)) for scale in scales]


def forward_planned_patch(plans_file: Path, configuration: str = "3d_fullres"):
    """Build the network exactly as nnUNetTrainer.build_network_architecture does and run one planned patch."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(str(plans_file)).get_configuration(configuration)
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, len(LABELS), allow_init=True,
                                 deep_supervision=True)
    with torch.no_grad():
        outs = net(torch.randn(1, 1, *cm.patch_size))
    return cm, net, outs


def test_plan_tiny_anisotropic_dataset_and_build_network_from_plans(nnunet_dirs):
    folder = make_raw_dataset(nnunet_dirs["nnUNet_raw"], 901, "Tiny")
    write_fingerprint(nnunet_dirs["nnUNet_preprocessed"], folder, [(32, 48, 48)] * 4, [(4.0, 1.0, 1.0)] * 4)

    plans_file = plan_experiment(901, "ResUNetASPPPlanner")

    assert plans_file == nnunet_dirs["nnUNet_preprocessed"] / folder.name / "nnUNetResUNetASPPPlans.json"
    plans = json.loads(plans_file.read_text())
    assert plans["experiment_planner_used"] == "ResUNetASPPPlanner"
    cfg = plans["configurations"]["3d_fullres"]
    arch = cfg["architecture"]
    assert arch["network_class_name"] == CLASS_PATH
    kw = arch["arch_kwargs"]
    n = kw["n_stages"]
    assert kw["n_blocks_per_stage"] == list(PAPER_ENCODER_BLOCKS[:n]) and kw["n_conv_per_stage_decoder"] == [1] * (n - 1)
    assert kw["aspp_rates"] == [1, 2, 4]
    assert kw["kernel_sizes"][0] == [1, 3, 3]  # 4 mm slices: in-plane kernels first
    assert cfg["data_identifier"] == "nnUNetResUNetASPPPlans_3d_fullres"

    cm, net, outs = forward_planned_patch(plans_file)
    assert isinstance(net, ResUNetASPP)
    assert [tuple(o.shape[2:]) for o in outs] == ds_target_shapes(cm.patch_size, cm.pool_op_kernel_sizes)
    assert all(o.shape[:2] == (1, len(LABELS)) for o in outs)

    cm2d, _, outs2d = forward_planned_patch(plans_file, "2d")  # the 2d configuration builds our network too
    assert cm2d.network_arch_class_name == CLASS_PATH
    assert [tuple(o.shape[2:]) for o in outs2d] == ds_target_shapes(cm2d.patch_size, cm2d.pool_op_kernel_sizes)


def test_kits_like_plans_use_paper_blocks_and_respect_memory_target(nnunet_dirs):
    folder = make_raw_dataset(nnunet_dirs["nnUNet_raw"], 902, "KiTSLike", n_cases=2, shape=(8, 8, 8),
                              num_training=300)
    # KiTS21-like: 0.78 mm isotropic (the paper's spacing), ~400 x 512 x 512 voxels
    write_fingerprint(nnunet_dirs["nnUNet_preprocessed"], folder, [(380 + 20 * i, 512, 512) for i in range(3)],
                      [(0.78125,) * 3] * 3)

    patches = {}
    for gb in (8, 24):
        plans = json.loads(plan_experiment(902, ResUNetASPPPlanner, gpu_memory_target_gb=gb,
                                           plans_name=f"ASPP{gb}GB").read_text())
        cfg = plans["configurations"]["3d_fullres"]
        kw = cfg["architecture"]["arch_kwargs"]
        assert kw["n_stages"] == 6 and kw["n_blocks_per_stage"] == [1, 3, 4, 6, 3, 3]
        estimate = estimate_conv_feature_map_elements(cfg["patch_size"], len(LABELS), kw)
        assert estimate <= 730_000_000 * gb / 8  # the planner's patch search stopped under its reference
        assert cfg["data_identifier"] == f"ASPP{gb}GB_3d_fullres"
        patches[gb] = cfg["patch_size"]
    assert np.prod(patches[24]) > np.prod(patches[8])


def test_paper_planner_keeps_four_downsampling_stages(nnunet_dirs):
    from nnunet_transfer.planning import ResUNetASPPPaperPlanner

    folder = make_raw_dataset(nnunet_dirs["nnUNet_raw"], 905, "KiTSPaper", n_cases=2, shape=(8, 8, 8),
                              num_training=300)
    write_fingerprint(nnunet_dirs["nnUNet_preprocessed"], folder, [(380 + 20 * i, 512, 512) for i in range(3)],
                      [(0.78125,) * 3] * 3)
    plans = json.loads(plan_experiment(905, "ResUNetASPPPaperPlanner").read_text())
    assert PLANNERS["ResUNetASPPPaperPlanner"] is ResUNetASPPPaperPlanner
    assert plans["plans_name"] == "nnUNetResUNetASPPPaperPlans"
    cfg = plans["configurations"]["3d_fullres"]
    kw = cfg["architecture"]["arch_kwargs"]
    # the paper: full-resolution stage, then four downsampling stages with 2, 3, 5, 2 extra blocks
    assert kw["n_stages"] == 5 and kw["n_blocks_per_stage"] == [1, 3, 4, 6, 3]
    assert len(kw["strides"]) == len(kw["kernel_sizes"]) == len(kw["features_per_stage"]) == 5
    assert len(kw["n_conv_per_stage_decoder"]) == 4
    assert all(p % np.prod([s[i] for s in kw["strides"]]) == 0 for i, p in enumerate(cfg["patch_size"]))


def _nnunet_topology(spacing, patch):
    """nnU-Net's own rule for the pooling topology of a patch at a spacing."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, strides, kernels, planned_patch, _ = get_pool_and_conv_props(list(spacing), list(patch), 4, 999999)
    return [list(s) for s in strides], [list(k) for k in kernels], [int(p) for p in planned_patch]


def test_plan_with_paper_spacing_and_patch_holds_them_exactly(nnunet_dirs):
    """kits21-dodnet: ResUNetASPPPaperPlanner at 0.78125 mm and 128^3 (the paper's preprocessing)."""
    folder = make_raw_dataset(nnunet_dirs["nnUNet_raw"], 906, "KiTSFixed", n_cases=2, shape=(8, 8, 8),
                              num_training=300)
    write_fingerprint(nnunet_dirs["nnUNet_preprocessed"], folder, [(380 + 20 * i, 512, 512) for i in range(3)],
                      [(3.0, 0.8, 0.8)] * 3)  # the dataset's own median spacing is not the paper's
    spacing, patch = (0.78125,) * 3, (128, 128, 128)
    plans = json.loads(plan_experiment(906, "ResUNetASPPPaperPlanner", spacing=spacing, patch_size=patch).read_text())
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["spacing"] == list(spacing) and cfg["patch_size"] == list(patch)
    kw = cfg["architecture"]["arch_kwargs"]
    strides, kernels, _ = _nnunet_topology(spacing, patch)
    assert kw["n_stages"] == 5 and kw["strides"] == strides[:5] and kw["kernel_sizes"] == kernels[:5]
    assert cfg["batch_size"] >= 2
    assert cfg["median_image_size_in_voxels"] != list(patch)  # the real median shape stays in the plans


def test_plan_fixed_patch_follows_nnunet_rules_for_topology_and_batch(nnunet_dirs, capsys):
    """MLEAM's 96 x 96 x 32 patch at 0.625 x 0.625 x 1.5 mm with nnU-Net's own planner; a patch too large for the
    memory target is kept with nnU-Net's minimum batch size; a patch nnU-Net's pooling rule cannot keep is refused."""
    from nnunet_transfer.planning.fixed_patch import FixedPatchError

    folder = make_raw_dataset(nnunet_dirs["nnUNet_raw"], 907, "ProstateFixed", n_cases=2, shape=(8, 8, 8),
                              num_training=50)
    write_fingerprint(nnunet_dirs["nnUNet_preprocessed"], folder, [(30 + i, 320, 320) for i in range(3)],
                      [(3.6, 0.6, 0.6)] * 3)
    spacing, patch = (1.5, 0.625, 0.625), (32, 96, 96)
    plans = json.loads(plan_experiment(907, "ExperimentPlanner", spacing=spacing, patch_size=patch,
                                       plans_name="MLEAMPaper").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["spacing"] == list(spacing) and cfg["patch_size"] == list(patch)
    strides, kernels, planned = _nnunet_topology(spacing, patch)
    assert planned == list(patch)
    kw = cfg["architecture"]["arch_kwargs"]
    assert kw["strides"] == strides and kw["kernel_sizes"] == kernels and kw["n_stages"] == len(strides)
    assert cfg["batch_size"] > 2  # a small patch: nnU-Net's rule fills the memory target with a larger batch

    big = json.loads(plan_experiment(907, "ExperimentPlanner", spacing=spacing, patch_size=(64, 256, 256),
                                     gpu_memory_target_gb=2, plans_name="TooBig").read_text())
    assert big["configurations"]["3d_fullres"]["patch_size"] == [64, 256, 256]
    assert big["configurations"]["3d_fullres"]["batch_size"] == 2
    assert "needs about" in capsys.readouterr().out

    with pytest.raises(FixedPatchError, match="cannot keep the patch"):
        plan_experiment(907, "ExperimentPlanner", spacing=spacing, patch_size=(30, 90, 90), plans_name="Odd")


def test_static_estimate_equals_network_count():
    kw = {"n_stages": 4, "features_per_stage": [4, 8, 16, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
          "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
          "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], "n_blocks_per_stage": [1, 3, 4, 6],
          "n_conv_per_stage_decoder": [1, 1, 1], "conv_bias": True,
          "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
          "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
          "nonlin_kwargs": {"inplace": True}, "aspp_rates": [1, 2]}
    req = ("conv_op", "norm_op", "dropout_op", "nonlin")
    ours = ResUNetASPPPlanner.static_estimate_VRAM_usage((8, 32, 32), 1, 3, CLASS_PATH, kw, req)
    net = ResUNetASPP(input_channels=1, num_classes=3, **kw)
    assert ours == net.compute_conv_feature_map_size((8, 32, 32)) > 0


def test_missing_fingerprint_says_how_to_fix(nnunet_dirs):
    make_raw_dataset(nnunet_dirs["nnUNet_raw"], 903, "NoFingerprint", n_cases=1, shape=(8, 8, 8))
    with pytest.raises(FileNotFoundError, match=r"nnUNetv2_extract_fingerprint -d 903"):
        plan_experiment(903, "ResUNetASPPPlanner")


def test_missing_environment_variable_is_reported(monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.setenv("nnUNet_raw", "/nonexistent")
    with pytest.raises(RuntimeError, match="nnUNet_preprocessed"):
        plan_experiment(904, "ResUNetASPPPlanner")


def test_resolve_planner_names_classes_and_dotted_paths():
    assert PLANNERS["ResUNetASPPPlanner"] is ResUNetASPPPlanner
    assert resolve_planner("ResUNetASPPPlanner") is ResUNetASPPPlanner
    assert resolve_planner(ResUNetASPPPlanner) is ResUNetASPPPlanner
    assert resolve_planner("nnunet_transfer.planning.res_unet_aspp_planner.ResUNetASPPPlanner") is ResUNetASPPPlanner
    assert resolve_planner("nnUNetPlannerResEncM").__name__ == "nnUNetPlannerResEncM"
    with pytest.raises(ValueError, match="ResUNetASPPPlanner"):  # lists the known names
        resolve_planner("NoSuchPlanner")
    with pytest.raises(TypeError, match="ExperimentPlanner"):
        resolve_planner("nnunet_transfer.architectures.res_unet_aspp.ResUNetASPP")


@pytest.mark.slow
def test_extract_fingerprint_plan_and_preprocess_end_to_end(nnunet_dirs):
    folder = make_raw_dataset(nnunet_dirs["nnUNet_raw"], 905, "EndToEnd")

    plans_file = plan_experiment(905, "ResUNetASPPPlanner", extract_fingerprint=True, preprocess=True,
                                 configurations=("3d_fullres",), num_processes=2)

    preprocessed = nnunet_dirs["nnUNet_preprocessed"] / folder.name
    fingerprint = json.loads((preprocessed / "dataset_fingerprint.json").read_text())
    assert fingerprint["spacings"][0] == [4.0, 1.0, 1.0]
    data = preprocessed / "nnUNetResUNetASPPPlans_3d_fullres"
    assert len([p for p in data.iterdir() if p.name.startswith("case_") and p.suffix == ".pkl"]) == 4
    cm, _, outs = forward_planned_patch(plans_file)
    assert [tuple(o.shape[2:]) for o in outs] == ds_target_shapes(cm.patch_size, cm.pool_op_kernel_sizes)
