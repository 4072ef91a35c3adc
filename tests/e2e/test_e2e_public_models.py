"""End to end with the real nnU-Net commands: a Models Genesis file in its released format fine-tuned in nnU-Net.

synth kits21 -> convert -> nnUNetv2_plan_and_preprocess -> ``nnunet-transfer plan-arch -a genesis-unet3d --weights
Genesis_Chest_CT.pt`` (``{"state_dict": {"module.<UNet3D key>"}}``, random weights) -> nnUNetv2_train with
FineTuneTrainer (one epoch of two iterations, CPU; UNet3D has one output, so no deep supervision) -> the transfer
report in the fold folder says every encoder-decoder tensor of the file loaded.
"""

from __future__ import annotations

import pytest
import torch

from nnunet_transfer.pretrained.safe_load import read_checkpoint_file
from nnunet_transfer.transfer.weights import TransferReport
from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source
from support.public_releases import genesis_release

pytestmark = pytest.mark.slow

DATASET_ID, DATASET = 617, "Dataset617_KiTS21"
TINY = "FineTuneTrainer_tinyGenesis"
PLANS = "nnUNetPlans_genesis-unet3d"


def test_models_genesis_file_fine_tunes_in_nnunet(tmp_path):
    ws = NnUNetWorkspace(tmp_path / "ws")
    ws.env["nnUNet_def_n_proc"] = "1"
    ws.cli("synth", "kits21", ws.root / "src", "--cases", "5", "--seed", "3", "--shape", "16", "32", "32")
    ws.cli("convert", "kits21", ws.root / "src", "-d", DATASET_ID)
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres", "-np", "1")
    torch.manual_seed(0)
    weights = ws.root / "Genesis_Chest_CT.pt"
    release = genesis_release()
    torch.save(release, weights)

    out = ws.cli("plan-arch", "-d", DATASET_ID, "-a", "genesis-unet3d", "--weights", weights)
    assert "Models Genesis: 104 of 104 backbone tensors loaded (100.0%)" in out
    assert f"-tr FineTuneTrainer -p {PLANS}" in out
    ws.write_trainers("tiny_genesis", [trainer_variant_source(TINY, "FineTuneTrainer",
                                                              base_module="nnunet_transfer.trainers.finetune")])
    log = ws.train(DATASET_ID, "3d_fullres", "0", TINY, plans=PLANS)
    assert "Pretrained weights:" in log
    report = TransferReport.load(ws.model_folder(DATASET, TINY, "3d_fullres", PLANS) / "fold_0" /
                                 "transfer_report.json")
    assert report.n_loaded == 104 and not report.missing and not report.shape_mismatched
    assert report.reinitialised == ["out_tr.final_conv.weight", "out_tr.final_conv.bias"]
    checkpoint = read_checkpoint_file(ws.model_folder(DATASET, TINY, "3d_fullres", PLANS) / "fold_0" /
                                      "checkpoint_final.pth")
    assert "down_tr64.ops.0.conv1.weight" in checkpoint["network_weights"]
