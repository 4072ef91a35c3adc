"""The MLEAM paper's settings: MLEAMPaperPlanner's plans, MLEAMTrainer_paper's budget against its own schedule, and
the pretraining trainer (cross entropy, SGD 0.9, inverse-time decay).

Planning runs nnU-Net's planner in-process on a tiny raw dataset with a hand-written fingerprint (as
test_planning.py does); the trainers are constructed from those plans (no preprocessed data needed).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_planning import make_raw_dataset, write_fingerprint

from nnunet_transfer.planning import plan_experiment
from nnunet_transfer.planning.paper_planners import MLEAM_PAPER_BATCH, MLEAM_PAPER_PATCH, MLEAM_PAPER_SPACING
from nnunet_transfer.planning.plan_arch import MLEAM_CLASS_NAME, plan_arch

pytestmark = pytest.mark.filterwarnings("ignore:.*holds no preprocessed data yet")

DATASET_ID = 931


@pytest.fixture(scope="module")
def mleam_plans(tmp_path_factory):
    """nnU-Net folders with a PROMISE12-like dataset planned by MLEAMPaperPlanner (nothing preprocessed)."""
    root = tmp_path_factory.mktemp("mleam_paper")
    mp = pytest.MonkeyPatch()
    nnunet_dirs = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        nnunet_dirs[name] = root / name
        nnunet_dirs[name].mkdir()
        mp.setenv(name, str(root / name))
    folder = make_raw_dataset(nnunet_dirs["nnUNet_raw"], DATASET_ID, "Prostate", n_cases=2, shape=(20, 64, 64),
                              spacing_zyx=(3.0, 0.6, 0.6), num_training=50)
    # PROMISE12-like: ~3 mm slices, 0.6 mm in plane, 24 x 320 x 320 voxels
    write_fingerprint(nnunet_dirs["nnUNet_preprocessed"], folder, [(24, 320, 320), (30, 320, 320), (26, 256, 256)],
                      [(3.0, 0.6, 0.6), (2.5, 0.62, 0.62), (3.6, 0.55, 0.55)])
    yield nnunet_dirs, folder, plan_experiment(DATASET_ID, "MLEAMPaperPlanner")
    mp.undo()


def _trainer(cls, dirs, folder, plans_name: str):
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans = json.loads((dirs["nnUNet_preprocessed"] / folder.name / f"{plans_name}.json").read_text())
    return cls(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json, device=torch.device("cpu"))


def test_planner_writes_the_papers_spacing_patch_and_batch(mleam_plans):
    _, _, plans_file = mleam_plans
    plans = json.loads(plans_file.read_text())
    assert plans_file.stem == "nnUNetMLEAMPaperPlans"
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["spacing"] == pytest.approx(list(MLEAM_PAPER_SPACING))
    assert cfg["patch_size"] == list(MLEAM_PAPER_PATCH) and cfg["batch_size"] == MLEAM_PAPER_BATCH == 16
    # the real median shape (resampled to the paper's spacing), not the patch handed to the patch search
    assert cfg["median_image_size_in_voxels"][1] > 96
    # nnU-Net's topology for that patch: every axis divisible by its total stride
    strides = np.prod(np.array(cfg["architecture"]["arch_kwargs"]["strides"]), axis=0)
    assert all(p % s == 0 for p, s in zip(cfg["patch_size"], strides))
    # the MLEAM network on top keeps spacing, patch and batch
    cfg2 = json.loads(plan_arch(DATASET_ID, "plain", decoder="mleam", source_plans="nnUNetMLEAMPaperPlans",
                                preprocess=False).read_text())["configurations"]["3d_fullres"]
    assert cfg2["architecture"]["network_class_name"] == MLEAM_CLASS_NAME
    assert (cfg2["patch_size"], cfg2["batch_size"], cfg2["spacing"]) == (cfg["patch_size"], 16, cfg["spacing"])


def _lr_per_iteration(trainer) -> np.ndarray:
    optimizer, scheduler = trainer.configure_optimizers()
    rates = []
    for epoch in range(trainer.num_epochs):
        scheduler.step(epoch)  # what nnU-Net's on_train_epoch_start does
        rates += [optimizer.param_groups[0]["lr"]] * trainer.num_iterations_per_epoch
    return np.array(rates)


def test_paper_budget_fits_its_schedule(mleam_plans):
    from nnunet_transfer.trainers.mleam import MLEAMTrainer_paper

    dirs, folder, _ = mleam_plans
    plans_name = plan_arch(DATASET_ID, "plain", decoder="mleam", source_plans="nnUNetMLEAMPaperPlans",
                           preprocess=False).stem
    trainer = _trainer(MLEAMTrainer_paper, dirs, folder, plans_name)
    trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1, 4,
                                                         False)
    rates = _lr_per_iteration(trainer)
    assert len(rates) == 6000 and trainer.num_epochs == 24
    assert (rates < 1e-6).mean() <= 0.05
    assert sorted(set(np.round(np.log10(rates)).astype(int))) == [-5, -4, -3]  # every level runs 2000 iterations
    assert (np.round(np.log10(rates)) == -3).sum() == 2000

    trainer.num_epochs = 1000  # nnU-Net's budget with the same schedule: the run the budget replaces
    assert (_lr_per_iteration(trainer) < 1e-6).mean() > 0.9


def test_pretrain_trainer_is_cross_entropy_with_sgd_09(mleam_plans):
    from nnunet_transfer.trainers import MLEAMPretrainTrainer
    from nnunet_transfer.trainers.lr_schedulers import InverseTimeDecayLRScheduler

    dirs, folder, plans_file = mleam_plans
    trainer = _trainer(MLEAMPretrainTrainer, dirs, folder, plans_file.stem)
    trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1, 4,
                                                         True)
    optimizer, scheduler = trainer.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and isinstance(scheduler, InverseTimeDecayLRScheduler)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 0.0
    assert not optimizer.defaults["nesterov"]
    scheduler.step(100)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 / (1 + 1e-6 * 100))

    loss = trainer._build_loss()
    base = loss.loss
    patch = (8, 16, 16)
    logits = torch.randn(2, 4, *patch)
    target = torch.randint(0, 4, (2, 1, *patch)).float()
    expected = torch.nn.functional.cross_entropy(logits, target[:, 0].long())
    assert base(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_bspline_deformation_moves_image_and_labels_together():
    from nnunet_transfer.augmentation.bspline_deformation import BSplineDeformationTransform

    np.random.seed(0)
    seg = torch.zeros(1, 16, 40, 40, dtype=torch.int16)
    seg[:, 4:12, 10:30, 12:28] = 1
    seg[:, :, :2] = -1  # nnU-Net's padding label survives (nearest neighbour)
    image = torch.stack([seg[0].float() * 100 + torch.randn(16, 40, 40), -seg[0].float()])
    out = BSplineDeformationTransform(mesh_size=2, sigma=3.0)(image=image.clone(), segmentation=seg.clone())
    assert out["image"].shape == image.shape and out["segmentation"].shape == seg.shape
    assert out["segmentation"].dtype == torch.int16 and set(out["segmentation"].unique().tolist()) <= {-1, 0, 1}
    moved = (out["segmentation"] != seg).float().mean().item()
    assert 0.005 < moved < 0.5  # deformed, but not scrambled
    foreground = out["segmentation"][0] == 1
    # image and labels got the same field: the bright voxels are where the label went
    assert (out["image"][0][foreground] > 50).float().mean() > 0.95
    assert (out["image"][0][out["segmentation"][0] == 0] < 50).float().mean() > 0.95
    same = BSplineDeformationTransform(sigma=0.0)(image=image.clone(), segmentation=seg.clone())
    assert torch.allclose(same["image"], image, atol=1e-4) and torch.equal(same["segmentation"], seg)


def test_paper_trainer_adds_the_deformation_after_nnunets_spatial_transform():
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    from nnunet_transfer.augmentation.bspline_deformation import BSplineDeformationTransform
    from nnunet_transfer.trainers.mleam import MLEAMTrainer, MLEAMTrainer_paper

    args = (np.array(MLEAM_PAPER_PATCH), (-0.5, 0.5), None, (0, 1, 2), False)
    paper = MLEAMTrainer_paper.get_training_transforms(*args, foreground_labels=[1]).transforms
    spatial = next(i for i, t in enumerate(paper) if isinstance(t, SpatialTransform))
    assert isinstance(paper[spatial + 1], BSplineDeformationTransform) and paper[spatial + 1].mesh_size == 2
    plain = MLEAMTrainer.get_training_transforms(*args, foreground_labels=[1]).transforms
    assert not any(isinstance(t, BSplineDeformationTransform) for t in plain) and len(plain) == len(paper) - 1
