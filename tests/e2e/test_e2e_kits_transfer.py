"""End to end: MOTS weights -> KiTS21 HEC fine-tuning with the real nnU-Net commands -> predict -> evaluate."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from nnunet_transfer.evaluation.kits import HECS, evaluate_kits21
from nnunet_transfer.pretrained.safe_load import read_checkpoint_file
from nnunet_transfer.transfer.weights import TransferReport
from nnunet_transfer.workspace import trainer_variant_source
from support.mots_run import MOTS_ID, MOTS_SHAPE

pytestmark = pytest.mark.slow

KITS_ID, KITS_NAME = 601, "Dataset601_KiTS21"
PLANS = f"nnUNetPlans_from{MOTS_ID}"
TINY_KITS = "KiTS21HECTrainer_tiny"
TINY_FROZEN = "KiTS21HECTrainer_tinyFrozen"


@pytest.fixture(scope="module")
def kits(mots_pretrained):
    ws = mots_pretrained["workspace"]
    ws.cli("synth", "kits21", ws.root / "kits_src", "--cases", "6", "--seed", "5", "--shape", *MOTS_SHAPE)
    ws.cli("convert", "kits21", ws.root / "kits_src", "-d", KITS_ID)
    ws.cli("align-plans", "-s", MOTS_ID, "-t", KITS_ID)
    ws.write_trainers("tiny_kits", [
        trainer_variant_source(TINY_KITS, "KiTS21HECTrainer"),
        trainer_variant_source(TINY_FROZEN, "KiTS21HECTrainer", epochs=2, body="freeze_encoder = True"),
    ])
    return ws


def test_transfer_check_reports_without_training(kits, mots_pretrained):
    out = kits.cli("transfer-check", mots_pretrained["checkpoint"], "-d", KITS_ID, "-tr", TINY_KITS, "-p", PLANS)
    assert "path: nnunet -pretrained_weights" in out
    assert "re-initialised" in out and "missing (kept init)" in out


def test_finetune_with_pretrained_weights_then_predict_and_evaluate(kits, mots_pretrained, tmp_path):
    ws = kits
    log = ws.train(KITS_ID, "3d_fullres", "0", TINY_KITS, "-pretrained_weights", str(mots_pretrained["checkpoint"]),
                   plans=PLANS)
    fold = ws.model_folder(KITS_NAME, TINY_KITS, "3d_fullres", PLANS) / "fold_0"
    report = TransferReport.load(fold / "transfer_report.json")
    assert report.n_missing == 0 and report.n_loaded > 0
    assert report.reinitialised and all(".seg_layers." in k for k in report.reinitialised)
    assert "controller.weight" in report.unexpected  # the dynamic head does not carry over
    assert "Pretrained weights:" in log

    images = tmp_path / "images"
    images.mkdir()
    for f in sorted((ws.raw / KITS_NAME / "imagesTr").glob("*_0000.nii.gz")):
        shutil.copy(f, images)
    out = tmp_path / "pred"
    ws.predict(images, out, KITS_ID, "3d_fullres", TINY_KITS, ["0"], plans=PLANS)
    # official kits21 layout as ground truth: scores are means over the sampled annotations
    results = evaluate_kits21(out, ws.root / "kits_src", output_json=tmp_path / "m.json")
    assert results["gt_mode"] == "kits21_samples"
    assert set(results["per_case"]) == {p.name[:-7] for p in out.glob("*.nii.gz")}
    for hec in HECS:
        assert 0.0 <= results["mean"][hec]["dice"] <= 1.0
    assert json.loads((tmp_path / "m.json").read_text())["mean"].keys() == HECS.keys()


def test_frozen_encoder_stays_bit_identical_through_the_plans_record(kits, mots_pretrained):
    ws = kits
    ws.cli("align-plans", "-s", MOTS_ID, "-t", KITS_ID, "-tp", "nnUNetPlans_rec", "--pretrained",
           mots_pretrained["checkpoint"], "--no-preprocess")
    # the record path needs preprocessed data under the plans' data identifier: reuse the aligned one
    plans_file = ws.preprocessed / KITS_NAME / "nnUNetPlans_rec.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["data_identifier"] = f"{PLANS}_3d_fullres"
    plans_file.write_text(json.dumps(plans))
    ws.train(KITS_ID, "3d_fullres", "0", TINY_FROZEN, plans="nnUNetPlans_rec")
    fold = ws.model_folder(KITS_NAME, TINY_FROZEN, "3d_fullres", "nnUNetPlans_rec") / "fold_0"
    report = TransferReport.load(fold / "transfer_report.json")
    assert "controller.weight" in report.skipped and report.n_missing == 0
    pretrained = read_checkpoint_file(mots_pretrained["checkpoint"])["network_weights"]
    tuned = read_checkpoint_file(fold / "checkpoint_final.pth")["network_weights"]
    encoder = [k for k in tuned if k.startswith("encoder.")]
    assert encoder
    for k in encoder:
        assert torch.equal(tuned[k], pretrained[k]), f"{k} changed although the encoder is frozen"
    decoder = [k for k in tuned if k.startswith("decoder.stages") and k.endswith("weight")]
    assert any(not torch.equal(tuned[k], pretrained[k]) for k in decoder)

