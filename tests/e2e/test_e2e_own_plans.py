"""End to end: MOTS weights -> a KiTS21 target planned with its own nnU-Net plans (other kernels, strides and one
stage fewer) -> transfer-check adapts every tensor with a counterpart -> a short fine-tuning trains with them."""

from __future__ import annotations

import json

import pytest
import torch

from nnunet_transfer.pretrained.safe_load import read_checkpoint_file
from nnunet_transfer.transfer.weights import TransferReport
from nnunet_transfer.workspace import trainer_variant_source
from support.mots_run import MOTS_NAME

pytestmark = pytest.mark.slow

TARGET_ID, TARGET_NAME = 620, "Dataset620_KiTS21"
PLANS = "nnUNetPlans_thick"
TRAINER = "KiTS21HECTrainer_ownPlans"


def _architecture(plans_file) -> dict:
    return json.loads(plans_file.read_text())["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]


@pytest.fixture(scope="module")
def target(mots_pretrained):
    """KiTS21 with nnU-Net's own plans for thick slices (48 mm, 3x the MOTS source's; 12 mm in-plane, about 2x) and
    a smaller field of view than the MOTS source: 3 stages instead of 4, stage 1 with a (1,3,3) kernel."""
    ws = mots_pretrained["workspace"]
    ws.cli("synth", "kits21", ws.root / "kits_own_src", "--cases", "5", "--seed", "5", "--shape", "16", "32", "32")
    ws.cli("convert", "kits21", ws.root / "kits_own_src", "-d", TARGET_ID)
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", TARGET_ID, "-c", "3d_fullres", "-np", "2",
              "-overwrite_target_spacing", "48", "12", "12", "-overwrite_plans_name", PLANS)
    ws.write_trainers("tiny_own_plans", [trainer_variant_source(TRAINER, "KiTS21HECTrainer")])
    return ws


def test_own_plans_transfer_check_then_fine_tuning(target, mots_pretrained, tmp_path):
    ws = target
    source = _architecture(ws.preprocessed / MOTS_NAME / "nnUNetPlans.json")
    own = _architecture(ws.preprocessed / TARGET_NAME / f"{PLANS}.json")
    # the premise: the target's plans differ from the source's in depth, kernels and strides
    assert own["n_stages"] == source["n_stages"] - 1
    assert own["kernel_sizes"] != source["kernel_sizes"][:own["n_stages"]]
    assert own["strides"] != source["strides"][:own["n_stages"]]
    checkpoint = mots_pretrained["checkpoint"]

    out = ws.cli("set-pretrained", checkpoint, "-d", TARGET_ID, "-p", PLANS)
    assert f"-p {PLANS}" in out
    report_json = tmp_path / "check.json"
    out = ws.cli("transfer-check", "-d", TARGET_ID, "-tr", TRAINER, "-p", PLANS, "-o", report_json)
    assert "path: plans record" in out and "kernel [3, 3, 3] -> [1, 3, 3]" in out
    assert "surplus source stages" in out and "matched by position" in out
    check = json.loads(report_json.read_text())
    assert check["summary"]["shape_mismatched"] == 0 and check["summary"]["adapted"] > 0
    assert check["summary"]["surplus"] > 0
    statuses = check["tensors"]
    assert not [k for k, v in statuses.items() if v["status"] == "skipped"]
    new = [k for k, v in statuses.items() if v["status"] == "new"]
    assert new and all(".seg_layers." in k for k in new)  # only the head has no counterpart
    assert any("transposed-conv stride" in v["detail"] for v in statuses.values())

    log = ws.train(TARGET_ID, "3d_fullres", "0", TRAINER, plans=PLANS)
    assert "Pretrained weights:" in log
    fold = ws.model_folder(TARGET_NAME, TRAINER, "3d_fullres", PLANS) / "fold_0"
    trained = TransferReport.load(fold / "transfer_report.json")
    assert trained.n_shape_mismatched == 0 and dict(trained.adapted).keys() == {k for k, _ in check["adapted"]}
    weights = read_checkpoint_file(fold / "checkpoint_final.pth")["network_weights"]
    pretrained = read_checkpoint_file(checkpoint)["network_weights"]
    stage_key = next(k for k in weights if k.startswith("encoder.stages.") and k.endswith("conv.weight"))
    assert weights[stage_key].shape[2:] == tuple(own["kernel_sizes"][0])
    assert pretrained[stage_key].shape[0] == weights[stage_key].shape[0]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
