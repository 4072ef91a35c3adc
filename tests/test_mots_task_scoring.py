"""MOTS per-task scoring: a case is scored on its own task's head, not on the merged all-task label map.

The issue's example: the liver case's own liver and liver-tumour heads are perfect, but the hepatic-vessel-tumour
head also fires on the liver tumour. In the all-task map nnU-Net's region conversion lets the later hepatic-vessel
tumour region overwrite the liver tumour (liver_tumor Dice 0.0); DoDNet scores the case with its own task's
channels (Dice 1.0), and so do our validation (network conditioned on the case's task) and predict-tasks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_transfer.architectures.dynamic_head import NOT_EVALUATED_LOGIT, DynamicHeadNetwork
from nnunet_transfer.data import mots_tasks
from nnunet_transfer.evaluation.partial_label import evaluate_partial_label_folder

SHAPE = (6, 10, 10)


def _overlap_head_outputs() -> tuple[torch.Tensor, np.ndarray]:
    """(1, 7 tasks, 2 outputs, *SHAPE) head logits of a liver case, and its reference label map."""
    liver = np.zeros(SHAPE, bool)
    liver[1:5, 2:8, 2:8] = True
    tumour = np.zeros(SHAPE, bool)
    tumour[2:4, 4:6, 4:6] = True
    head = torch.full((1, mots_tasks.NUM_TASKS, 2, *SHAPE), -10.0)
    head[0, 0, mots_tasks.ORGAN][torch.from_numpy(liver)] = 10.0  # liver head: perfect
    head[0, 0, mots_tasks.TUMOR][torch.from_numpy(tumour)] = 10.0  # liver-tumour head: perfect
    head[0, 2, mots_tasks.TUMOR][torch.from_numpy(tumour)] = 10.0  # hepatic-vessel-tumour head fires there too
    reference = np.zeros(SHAPE, np.uint8)
    reference[liver] = 1
    reference[tumour] = 2
    return head, reference


def _network() -> DynamicHeadNetwork:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    backbone = PlainConvUNet(1, 2, [4, 8], torch.nn.Conv3d, 3, [1, 2], 1, 8, 1, True, torch.nn.InstanceNorm3d,
                             {"affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True})
    return DynamicHeadNetwork(backbone.encoder, backbone.decoder, mots_tasks.NUM_TASKS,
                              mots_tasks.head_channel_index())


def _label_map(logits: torch.Tensor) -> np.ndarray:
    """nnU-Net's region -> label conversion with the MOTS dataset.json labels (what nnUNetv2_predict writes)."""
    labels, order = mots_tasks.nnunet_region_labels()
    manager = LabelManager(labels, order)
    return np.asarray(manager.convert_logits_to_segmentation(logits), dtype=np.uint8)


def _liver_scores(tmp_path, name: str, prediction: np.ndarray, reference: np.ndarray) -> dict:
    for folder, array in (("pred_" + name, prediction), ("gt", reference)):
        (tmp_path / folder).mkdir(exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / folder / "liver_000.nii.gz"))
    return evaluate_partial_label_folder(tmp_path / ("pred_" + name), tmp_path / "gt", {"liver_000": 0})["per_case"][
        "liver_000"]


def test_overlap_example_all_task_map_loses_the_liver_tumour_own_task_head_keeps_it(tmp_path):
    head, reference = _overlap_head_outputs()
    net = _network()

    merged = _label_map(net._to_output_channels(head)[0])  # stock all-task inference
    assert (merged[reference == 2] == 6).all()  # hepatic-vessel tumour overwrote the liver tumour
    scores = _liver_scores(tmp_path, "merged", merged, reference)
    assert scores["liver_tumor"] == 0.0 and scores["liver"] < 1.0  # the tumour voxels left the liver region too
    [warning] = evaluate_partial_label_folder(tmp_path / "pred_merged", tmp_path / "gt", {"liver_000": 0})["warnings"]
    assert "liver_000" in warning and "predict-tasks" in warning  # a merged map is recognised and named

    own = _label_map(net._to_output_channels(head[:, :1], torch.tensor([0]))[0])  # conditioned on the liver task
    np.testing.assert_array_equal(own, reference)
    assert _liver_scores(tmp_path, "own", own, reference) == {"liver": 1.0, "liver_tumor": 1.0}


def test_single_task_conditioning_broadcasts_over_a_batch_of_tiles():
    net = _network().eval()
    x = torch.randn(3, 1, 8, 8, 8)
    with torch.no_grad():
        every = net(x)
        with net.conditioned_on(torch.tensor([2])):
            tiles = net(x)
    own = [ch.index for ch in mots_tasks.OUTPUT_CHANNELS if ch.task == 2]
    torch.testing.assert_close(tiles[:, own], every[:, own])
    others = [c for c in range(mots_tasks.NUM_OUTPUT_CHANNELS) if c not in own]
    assert (tiles[:, others] == NOT_EVALUATED_LOGIT).all()
    with pytest.raises(ValueError, match="task_ids must have shape"):
        with net.conditioned_on(torch.tensor([0, 1])):
            net(x)


# ---------------------------------------------------------------------------------------------------------------
# DoDNet-comparable numbers: HD95, post-processing, empty-mask conventions, predict-tasks' folder layout


def _brute_hd95(pred, ref, spacing):
    from scipy import ndimage
    from scipy.spatial.distance import cdist

    def border(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m, ndimage.generate_binary_structure(3, 1))) * spacing

    d = cdist(border(pred), border(ref))
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_hd95_matches_the_medpy_definition_and_empty_mask_conventions():
    from scipy import ndimage

    from nnunet_transfer.evaluation.dodnet import DODNET_EMPTY_HD95, dice, hd95

    rng = np.random.default_rng(0)
    for spacing in ((1.0, 1.0, 1.0), (2.5, 0.8, 0.7)):
        pred = ndimage.gaussian_filter(rng.standard_normal((12, 14, 13)), 2) > 0.1
        ref = ndimage.gaussian_filter(rng.standard_normal((12, 14, 13)), 2) > 0.1
        assert hd95(pred, ref, spacing) == pytest.approx(_brute_hd95(pred, ref, np.array(spacing)), abs=1e-9)
    empty, one = np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool)
    one[1, 1, 1] = True
    assert np.isnan(hd95(empty, one, (1, 1, 1))) and np.isnan(dice(empty, empty))
    assert hd95(empty, one, (1, 1, 1), "dodnet") == DODNET_EMPTY_HD95 and hd95(empty, empty, (1, 1, 1), "dodnet") == 0
    assert dice(empty, empty, "dodnet") == 0.0 and dice(one, one, "dodnet") == pytest.approx(2 / 3)


def test_dodnet_postprocessing_rules():
    from nnunet_transfer.evaluation.dodnet import dodnet_postprocess

    organ = np.zeros((10, 20, 20), bool)
    organ[1:8, 1:9, 1:9] = True  # large component
    organ[1:3, 15:17, 15:17] = True  # small second component
    tumour = np.zeros_like(organ)
    tumour[2:6, 2:6, 2:6] = True  # 64 voxels, inside the organ
    tumour[7, 8, 8] = True  # 1 voxel, inside: removed (<= 50 voxels and more than one component)
    tumour[1, 15, 15] = True  # inside the small organ component: goes with it
    liver, liver_tumour = dodnet_postprocess(0, organ, tumour)
    assert liver.sum() == 7 * 8 * 8 and liver_tumour.sum() == 64
    kidney, kidney_tumour = dodnet_postprocess(1, organ, tumour)  # two kidneys kept, largest tumour only
    assert kidney.sum() == organ.sum() and kidney_tumour.sum() == 64
    vessel, vessel_tumour = dodnet_postprocess(2, organ, tumour)  # the vessel is not touched
    assert vessel is organ and vessel_tumour.sum() == 64


def test_evaluate_mots_reads_predict_tasks_folders_with_dodnet_options(tmp_path, capsys):
    from nnunet_transfer.cli.main import main

    head, reference = _overlap_head_outputs()
    net = _network()
    merged = _label_map(net._to_output_channels(head)[0])
    own = _label_map(net._to_output_channels(head[:, :1], torch.tensor([0]))[0])
    gt = tmp_path / "gt"
    gt.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(reference), str(gt / "liver_000.nii.gz"))
    for folder, array in (("liver", own), ("hepatic_vessel", merged)):  # predict-tasks: a folder per task
        (tmp_path / "pred" / folder).mkdir(parents=True)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "pred" / folder / "liver_000.nii.gz"))
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text('{"file_ending": ".nii.gz", "nnunet_transfer": {"case_to_task": {"liver_000": 0}}}')
    assert main(["evaluate", "mots", str(tmp_path / "pred"), str(gt), "--dataset-json", str(dataset_json),
                 "--conventions", "dodnet", "--postprocess", "dodnet", "-o", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["layout"] == "per_task_folders" and result["postprocessing"] == "dodnet"
    n_liver, n_tumour = int((reference > 0).sum()), int((reference == 2).sum())
    assert result["per_case"]["liver_000"] == {"liver": pytest.approx(2 * n_liver / (2 * n_liver + 1)),
                                               "liver_tumor": pytest.approx(2 * n_tumour / (2 * n_tumour + 1))}
    assert result["hd95_per_case"]["liver_000"] == {"liver": 0.0, "liver_tumor": 0.0}
    printed = capsys.readouterr().out
    assert "HD95 per task" in printed and "conventions dodnet" in printed


def test_predict_tasks_label_map_of_each_task_from_all_region_probabilities():
    from nnunet_transfer.inference.predict_tasks import task_label_map

    head, reference = _overlap_head_outputs()
    probabilities = torch.sigmoid(_network()._to_output_channels(head)[0]).numpy()
    labels, order = mots_tasks.nnunet_region_labels()
    manager = LabelManager(labels, order)
    liver = task_label_map(probabilities, mots_tasks.TASKS[0], manager)
    np.testing.assert_array_equal(liver, reference)  # the liver tumour is kept
    vessel = task_label_map(probabilities, mots_tasks.TASKS[2], manager)
    np.testing.assert_array_equal(vessel, np.where(reference == 2, 6, 0))  # the vessel task's own view
    assert not task_label_map(probabilities, mots_tasks.TASKS[6], manager).any()
    post = task_label_map(probabilities, mots_tasks.TASKS[0], manager, postprocess="dodnet")
    np.testing.assert_array_equal(post, reference)  # one liver component, one 8-voxel tumour (the only one)
