"""End to end: the med3d recipe at ``--scale tiny`` (a smoke run of every step through the real
``nnunet-transfer``/``nnUNetv2_*`` commands).

Med3D pretraining writes a MedicalNet-format encoder file that MedicalNet's loader takes completely and that
``plan-arch --weights`` records, and the fine-tuning starts from it.
"""

from __future__ import annotations

import json

import pytest
import torch

from support.tiny_recipes import test_tiny_recipe_runs_every_arm_and_writes_the_papers_table  # noqa: F401

pytestmark = pytest.mark.slow
RECIPE = "med3d"


def test_tiny_med3d_pretraining_writes_a_medicalnet_file_the_finetuning_starts_from(tiny_run):
    from nnunet_transfer.architectures.med3d import Med3DResNet
    from nnunet_transfer.transfer.medicalnet import load_medicalnet
    from nnunet_transfer.transfer.weights import TransferReport, read_state_dict

    workspace, _ = tiny_run
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
