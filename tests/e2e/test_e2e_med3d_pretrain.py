"""End to end with the real nnU-Net commands: Med3D-style pretraining -> MedicalNet-format file -> plan-arch --weights
-> fine-tuning.

On the session's tiny MOTS dataset (tests/e2e/conftest.py): plan-arch -a med3d-resnet10 -> one epoch of two iterations
of Med3DPretrainTrainer (shared ResNet-10, one branch per task) -> the encoder file written at the end of training
loads through MedicalNet's loader with every key, and ``plan-arch --weights`` takes it as a MedicalNet file.
"""

from __future__ import annotations

import pytest
import torch

from nnunet_transfer.architectures.med3d import Med3DResNet
from nnunet_transfer.transfer.medicalnet import load_medicalnet
from nnunet_transfer.transfer.weights import read_state_dict
from nnunet_transfer.workspace import trainer_variant_source
from support.mots_run import MOTS_ID, MOTS_NAME

pytestmark = pytest.mark.slow

TINY_MED3D_PRETRAIN = "Med3DPretrainTrainer_tiny"
PRETRAIN_PLANS, FINETUNE_PLANS = "nnUNetPlans_med3dpretrain", "nnUNetPlans_med3dpretrained"
ENCODER_FILE = "med3d_resnet10_encoder_medicalnet.pth"


def test_med3d_pretraining_writes_a_medicalnet_file_plan_arch_takes(mots_workspace):
    ws = mots_workspace
    ws.cli("plan-arch", "-d", MOTS_ID, "-a", "med3d-resnet10", "-p", PRETRAIN_PLANS)
    ws.write_trainers("tiny_med3d_pretrain", [trainer_variant_source(
        TINY_MED3D_PRETRAIN, "Med3DPretrainTrainer", final_validation=False)])
    log = ws.train(MOTS_ID, "3d_fullres", "0", TINY_MED3D_PRETRAIN, plans=PRETRAIN_PLANS)
    fold = ws.model_folder(MOTS_NAME, TINY_MED3D_PRETRAIN, "3d_fullres", plans=PRETRAIN_PLANS) / "fold_0"
    encoder_file = fold / ENCODER_FILE
    assert (fold / "checkpoint_final.pth").is_file() and encoder_file.is_file()
    training_log = "\n".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert str(encoder_file) in training_log + log

    saved = torch.load(encoder_file, weights_only=True)
    assert set(saved) == {"state_dict"} and all(k.startswith("module.") for k in saved["state_dict"])
    report = load_medicalnet(Med3DResNet(depth=10), encoder_file)
    assert report.complete and not report.missing and not report.unexpected and not report.shape_mismatched
    trained = read_state_dict(fold / "checkpoint_final.pth")
    torch.testing.assert_close(saved["state_dict"]["module.conv1.weight"], trained["encoder.conv1.weight"])
    # the plans' decoder is not built: the network is the encoder and the Med3D branches
    assert all(k.startswith(("encoder.", "decoder.branches.")) for k in trained)

    out = ws.cli("plan-arch", "-d", MOTS_ID, "-a", "med3d-resnet10", "--weights", encoder_file,
                 "-p", FINETUNE_PLANS, "--no-preprocess")
    assert "tensors load into the encoder" in out

    # ... and a fine-tuning starts from it (Med3DFinetuneTrainer through the plans' record: MedicalNet's format)
    finetune = "Med3DFinetuneTrainer_tinyFromOwnPretraining"
    ws.write_trainers("tiny_med3d_finetune", [trainer_variant_source(finetune, "Med3DFinetuneTrainer",
                                                                     final_validation=False)])
    log = ws.train(MOTS_ID, "3d_fullres", "0", finetune, plans=FINETUNE_PLANS)
    assert "Pretrained weights:" in log
    tuned_fold = ws.model_folder(MOTS_NAME, finetune, "3d_fullres", plans=FINETUNE_PLANS) / "fold_0"
    assert (tuned_fold / "checkpoint_final.pth").is_file() and (tuned_fold / "transfer_report.json").is_file()
