"""End to end: every recipe of the catalogue at ``--scale tiny`` (a smoke run of every step through the real
``nnunet-transfer``/``nnUNetv2_*`` commands), in one workspace shared by the module.

Also holds what ``test_e2e_med3d_pretrain`` and the localiser test of ``test_e2e_kits_transfer`` checked (the med3d
and localization recipes run those pipelines): Med3D pretraining writes a MedicalNet-format encoder file that
MedicalNet's loader takes completely and that ``plan-arch --weights`` records, and the fine-tuning starts from it;
the localiser's encoder transfers into the frozen-encoder segmentation and stays bit-identical there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nnunet_transfer.recipes.catalog import RECIPES
from nnunet_transfer.recipes.runner import RESULTS_JSON, RESULTS_MD, run_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict:
    """name -> (workspace, results) of each recipe run at tiny scale (one module-wide root)."""
    root = tmp_path_factory.mktemp("recipes_tiny")
    return {name: (root / name, run_recipe(name, root / name, "tiny")) for name in RECIPES}


@pytest.mark.parametrize("name", list(RECIPES))
def test_tiny_recipe_runs_every_arm_and_writes_the_papers_table(tiny_runs, name):
    workspace, results = tiny_runs[name]
    recipe = RECIPES[name]
    assert json.loads((workspace / RESULTS_JSON).read_text()) == json.loads(json.dumps(results))
    assert results["scale"] == "tiny" and results["seeds"] == [0]
    for condition, arms in results["runs"].items():
        assert set(arms) == set(recipe.arm_names)
        for arm, runs in arms.items():
            assert [r["seed"] for r in runs] == [0]
            for structure, metric, _ in recipe.columns:
                assert 0.0 <= runs[0]["mean"][structure][metric] <= 1.0
        for column in results["summary"][condition].values():
            assert set(column["differences"]) == set(recipe.arm_names[1:])
            assert all(math.isfinite(v) for d in column["differences"].values() for v in d)
    table = (workspace / RESULTS_MD).read_text()
    assert all(title in table for _, _, title in recipe.columns)
    assert f"paired diff {recipe.arm_names[1]} - {recipe.arm_names[0]}" in table
    log = (workspace / "commands.log").read_text()
    assert "nnUNetv2_train" in log and "exit 0" in log and "exit 1" not in log


def test_tiny_med3d_pretraining_writes_a_medicalnet_file_the_finetuning_starts_from(tiny_runs):
    from nnunet_transfer.architectures.med3d import Med3DResNet
    from nnunet_transfer.transfer.medicalnet import load_medicalnet
    from nnunet_transfer.transfer.weights import TransferReport, read_state_dict

    workspace, _ = tiny_runs["med3d"]
    results = workspace / "nnUNet_results"
    fold = next(results.glob("Dataset993_*/Med3DPretrainTrainer_recipe__nnUNetPlans_med3dPretrain__3d_fullres/fold_0"))
    encoder_file = fold / "med3d_resnet10_encoder_medicalnet.pth"
    saved = torch.load(encoder_file, weights_only=True)
    assert set(saved) == {"state_dict"} and all(k.startswith("module.") for k in saved["state_dict"])
    report = load_medicalnet(Med3DResNet(depth=10), encoder_file)
    assert report.complete and not report.missing and not report.unexpected and not report.shape_mismatched
    trained = read_state_dict(fold / "checkpoint_final.pth")
    torch.testing.assert_close(saved["state_dict"]["module.conv1.weight"], trained["encoder.conv1.weight"])
    # the plans' decoder is not built: the network is the encoder and the Med3D branches
    assert all(k.startswith(("encoder.", "decoder.branches.")) for k in trained)

    plans = json.loads(next(workspace.glob("nnUNet_preprocessed/Dataset994_*/nnUNetPlans_med3dPretrained.json"))
                       .read_text())
    assert str(encoder_file) in json.dumps(plans)  # plan-arch --weights recorded the file
    tuned = next(results.glob("Dataset994_*/Med3DFinetuneTrainer_med3dMed3d_seed0__nnUNetPlans_med3dPretrained__"
                              "3d_fullres/fold_0"))
    report = TransferReport.load(tuned / "transfer_report.json")
    # the 72 tensors of the ResNet-10 encoder load; the decoder is new (the file holds the encoder only)
    assert len(report.loaded) == 72 and all(k.startswith("encoder.") for k in report.loaded)
    assert report.n_shape_mismatched == 0 and all(k.startswith("decoder.") for k in report.missing)
    scratch = next(results.glob("Dataset994_*/Med3DFinetuneTrainer_med3dScratch_seed0__*/fold_0"))
    assert not (scratch / "transfer_report.json").exists()  # the scratch arm starts from random weights


def test_tiny_attention_arms_differ_only_in_gates_and_weights(tiny_runs):
    from nnunet_transfer.architectures.attention_unet import GATE_KEY_PREFIX
    from nnunet_transfer.transfer.weights import TransferReport

    workspace, _ = tiny_runs["attention-polyp"]
    folds = {p.parent.name.split("__")[0]: p for p in workspace.glob("nnUNet_results/Dataset997_*/*/fold_0")}
    gated = TransferReport.load(folds["AttentionUNetTrainer_attPretrainedgates_seed0"] / "transfer_report.json")
    new = [k for k in gated.reinitialised if ".seg_layers." not in k]
    assert new and all(k.startswith(GATE_KEY_PREFIX) for k in new)  # only the gates are new
    plain = TransferReport.load(folds["AttentionUNetTrainer_attPretrainednogates_seed0"] / "transfer_report.json")
    assert not [k for k in plain.reinitialised if ".seg_layers." not in k]  # the same U-Net: everything loads
    assert plain.loaded and set(plain.loaded) == set(gated.loaded)


def test_tiny_localiser_encoder_transfers_frozen_into_the_segmentation(tiny_runs):
    """Paper localization-pretraining: centre regression first, then the decoder on top of the frozen encoder."""
    from nnunet_transfer.pretrained.safe_load import read_checkpoint_file
    from nnunet_transfer.transfer.weights import TransferReport

    workspace, _ = tiny_runs["localization"]
    results = workspace / "nnUNet_results"
    loc_fold = next(results.glob("Dataset995_*/LocalizationPretrainTrainer_recipe__nnUNetDemoPlans__3d_fullres/fold_0"))
    fold = next(results.glob("Dataset995_*/FrozenEncoderTrainer_locLocalisationpretrained_seed0__nnUNetDemoPlans_loc__"
                             "3d_fullres/fold_1"))
    report = TransferReport.load(fold / "transfer_report.json")
    assert report.unexpected and all(k.startswith("regressor.") for k in report.unexpected)
    assert all(k.startswith("decoder.") and not k.startswith("decoder.encoder.") for k in report.missing)
    source = read_checkpoint_file(loc_fold / "checkpoint_final.pth")["network_weights"]
    tuned = read_checkpoint_file(fold / "checkpoint_final.pth")["network_weights"]
    encoder = [k for k in tuned if k.startswith("encoder.")]
    assert encoder and all(torch.equal(tuned[k], source[k]) for k in encoder)
    scratch = next(results.glob("Dataset995_*/FrozenEncoderTrainer_locScratch_seed0__nnUNetDemoPlans__3d_fullres/fold_1"))
    assert not (scratch / "transfer_report.json").exists()
