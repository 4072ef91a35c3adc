"""End to end: MOTS pretraining and prediction through the real nnU-Net commands, on CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer.data import mots_tasks
from support.files import input_folder
from support.mots_run import MOTS_ID, MOTS_NAME, TINY_MOTS

pytestmark = pytest.mark.slow


def test_pretraining_runs_and_logs_per_task_dice(mots_pretrained):
    log = mots_pretrained["log"]
    assert f"Using trainer '{TINY_MOTS}'" in log
    assert "Pseudo dice per task" in log
    assert "Validation Dice per task" in log
    fold = mots_pretrained["folder"] / "fold_0"
    summary = json.loads((fold / "validation" / "summary_per_task.json").read_text())
    case_to_task = mots_pretrained["dataset_json"][mots_tasks.DATASET_JSON_KEY]["case_to_task"]
    for case, scores in summary["per_case"].items():
        own = {ch.name for ch in mots_tasks.OUTPUT_CHANNELS if ch.task == case_to_task[case]}
        assert set(scores) == own  # each validation case is scored on its own task only
        # ... and was predicted with its own task's head: its map holds no other task's labels
        own_labels = {0, *mots_tasks.TASKS[case_to_task[case]].label_map.values()}
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(fold / "validation" / f"{case}.nii.gz")))
        assert set(np.unique(written).tolist()) <= own_labels, case
    assert (fold / "progress.png").is_file() and (fold / "progress_per_region.png").is_file()


def test_checkpoint_is_nnunet_format_with_backbone_names(mots_pretrained):
    ckpt = torch.load(mots_pretrained["checkpoint"], map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == TINY_MOTS
    keys = set(ckpt["network_weights"])
    assert any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys)
    assert {"controller.weight", "controller.bias"} <= keys
    assert ckpt["network_weights"]["controller.weight"].shape[0] == 162


def test_stock_predict_gives_a_multi_organ_label_map(mots_pretrained, tmp_path):
    ws = mots_pretrained["workspace"]
    images = sorted((ws.raw / MOTS_NAME / "imagesTr").glob("*_0000.nii.gz"))[:2]
    inp, out = input_folder(images, tmp_path / "in"), tmp_path / "out"
    ws.predict(inp, out, MOTS_ID, "3d_fullres", TINY_MOTS, ["0"])
    allowed = set(mots_tasks.unified_labels().values())
    for f in images:
        pred_file = out / f.name.replace("_0000.nii.gz", ".nii.gz")
        pred, ref = sitk.ReadImage(str(pred_file)), sitk.ReadImage(str(f))
        assert pred.GetSize() == ref.GetSize()
        np.testing.assert_allclose(pred.GetSpacing(), ref.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(pred.GetDirection(), ref.GetDirection(), atol=1e-6)
        assert set(np.unique(sitk.GetArrayFromImage(pred)).tolist()) <= allowed


def test_downstream_plain_unet_takes_the_weights_with_nnunet_loader(mots_pretrained):
    """nnU-Net's own load_pretrained_weights accepts the MOTS checkpoint for a plain network of the same plans."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(json.loads((mots_pretrained["folder"] / "plans.json").read_text()))
    cfg = plans.get_configuration("3d_fullres")
    net = get_network_from_plans(cfg.network_arch_class_name, cfg.network_arch_init_kwargs,
                                 cfg.network_arch_init_kwargs_req_import, 1, 4, deep_supervision=True)
    load_pretrained_weights(net, str(mots_pretrained["checkpoint"]))
    saved = torch.load(mots_pretrained["checkpoint"], map_location="cpu", weights_only=False)["network_weights"]
    for k, v in net.state_dict().items():
        if ".seg_layers." not in k:
            assert torch.equal(v, saved[k]), k


def test_resume_with_c_restores_network_logger_and_validation(mots_pretrained):
    """`--c` goes through nnU-Net's load_checkpoint: our network, loss and per-region logger must round-trip."""
    ws = mots_pretrained["workspace"]
    log = ws.train(MOTS_ID, "3d_fullres", "0", TINY_MOTS, "--c")
    assert "Validation Dice per task" in log
    ckpt = torch.load(mots_pretrained["checkpoint"], map_location="cpu", weights_only=False)
    assert len(ckpt["logging"]["dice_per_class_or_region"][0]) == mots_tasks.NUM_OUTPUT_CHANNELS


def test_predict_tasks_writes_each_task_map_and_evaluate_mots_scores_them(mots_pretrained, tmp_path):
    ws = mots_pretrained["workspace"]
    images = tmp_path / "images"
    images.mkdir()
    cases = ["liver_000", "kidney_000"]
    for case in cases:
        shutil.copy(ws.raw / MOTS_NAME / "imagesTr" / f"{case}_0000.nii.gz", images)
    out = tmp_path / "per_task"
    ws.cli("predict-tasks", "-i", images, "-o", out, "-d", MOTS_ID, "-tr", TINY_MOTS, "-f", "0", "-device", "cpu",
           "--disable_tta", "--tasks", "liver", "kidney", "hepatic_vessel")
    for task in ("liver", "kidney", "hepatic_vessel"):
        assert sorted(p.name for p in (out / task).iterdir()) == [f"{c}.nii.gz" for c in sorted(cases)]
        allowed = {0, *mots_tasks.TASK_BY_NAME[task].label_map.values()}
        for case in cases:
            written = sitk.ReadImage(str(out / task / f"{case}.nii.gz"))
            source = sitk.ReadImage(str(images / f"{case}_0000.nii.gz"))
            assert written.GetSize() == source.GetSize() and written.GetSpacing() == source.GetSpacing()
            assert set(np.unique(sitk.GetArrayFromImage(written)).tolist()) <= allowed
    from nnunet_transfer.evaluation.partial_label import evaluate_partial_label_folder

    case_to_task = mots_tasks.read_case_to_task(mots_pretrained["dataset_json"])
    result = evaluate_partial_label_folder(out, ws.raw / MOTS_NAME / "labelsTr", case_to_task, with_hd95=True)
    assert result["layout"] == "per_task_folders" and sorted(result["per_case"]) == sorted(cases)
    assert set(result["per_case"]["kidney_000"]) == {"kidney", "kidney_tumor"}
    assert set(result["hd95_per_case"]["liver_000"]) == {"liver", "liver_tumor"}
