"""Tests that learn: the demo's MOTS pretraining segments the large organs, fine-tuning from it segments the kidneys,
and the same checks fail on a negative control (labels mapped to the wrong channels).

One short demo run (one seed) is shared by every test here; it runs the real nnU-Net commands on CPU. Thresholds
sit well below what the run reaches and well above what a model that learned nothing (or the wrong thing) reaches.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.recipes.demo import (ALIGNED_PLANS, DEMO_PLANS, KITS_ID, KITS_NAME, MOTS_ID, MOTS_NAME, MOTS_TRAINER,
                                  RESULTS_FILE, DemoConfig, predict_folder, run_demo, trainer_name)
from nnunet_transfer.evaluation.dodnet import dice
from nnunet_transfer.evaluation.kits import HECS, evaluate_kits21

pytestmark = pytest.mark.slow

#: the learning thresholds: the seeded runs below reach liver 0.66, spleen 0.55-0.58 (held-out MOTS cases) and
#: kidney_and_mass ~0.85 (pretrained, seed 0); a model that learned nothing, or the wrong thing, scores ~0
ORGAN_DICE = 0.4
KIDNEY_AND_MASS_DICE = 0.5
CONTROL_ID, CONTROL_NAME = 992, "Dataset992_DemoKiTS21Control"
HELD_OUT_MOTS_ID, HELD_OUT_MOTS_NAME = 993, "Dataset993_DemoMOTSHeldOut"
LITS_PREFIX, SPLEEN_PREFIX = "liver", "spleen"  # case names convert mots gives LiTS and MSD spleen cases

#: one seed, fewer held-out cases, a shorter pretraining (8 x 75 iterations), 4 MOTS kidney cases with the phantom's
#: standard lesions and 4 x 50 fine-tuning iterations: the setting the thresholds above were measured in (the demo's
#: plans, its synthetic anatomy and its two side-by-side fine-tunings otherwise)
TEST_CONFIG = dict(seeds=(0,), test_cases=3, epochs=4, iterations=50, pretrain_epochs=8, kidney_cases=4,
                   kidney_lesions="standard", patch_size=None)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run_demo(DemoConfig(workspace=tmp_path_factory.mktemp("demo"), **TEST_CONFIG))


def _read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def mots_held_out(demo, tmp_path_factory):
    """New synthetic MOTS cases (another data seed: in no training), converted, and the pretrained model's
    predictions of them: {source prefix: [(predicted merged map, reference)]}."""
    from nnunet_transfer.workspace import NnUNetWorkspace

    ws = NnUNetWorkspace(demo["workspace"])
    config = DemoConfig(**TEST_CONFIG)
    tmp = tmp_path_factory.mktemp("mots_held_out")
    ws.cli("synth", "mots", tmp / "sources", "--cases", "2", "--seed", "1234", "--shape", *map(str, config.shape))
    ws.cli("convert", "mots", tmp / "sources", "-d", HELD_OUT_MOTS_ID, "--name", "DemoMOTSHeldOut")
    raw = ws.raw / HELD_OUT_MOTS_NAME
    images = tmp / "images"
    images.mkdir()
    for f in (raw / "imagesTr").glob("*.nii.gz"):
        shutil.copy(f, images)
    out = tmp / "pred"
    predict_folder(ws, ws.model_folder(MOTS_NAME, MOTS_TRAINER, "3d_fullres", DEMO_PLANS), 0, images, out)
    by_source: dict = {}
    for label in sorted((raw / "labelsTr").glob("*.nii.gz")):
        case = label.name[:-len(".nii.gz")]
        by_source.setdefault(case.split("_")[0], []).append((_read(out / label.name), _read(label)))
    return by_source


def test_demo_results_file_has_the_documented_shape(demo):
    results = json.loads((demo["workspace"] / RESULTS_FILE).read_text())
    for model in ("scratch", "pretrained"):
        assert [r["seed"] for r in results[model]] == [0]
        mean = results[model][0]["mean"]
        assert set(mean) == set(HECS)
        for hec in HECS:
            assert 0.0 <= mean[hec]["dice"] <= 1.0 and 0.0 <= mean[hec]["surface_dice"] <= 1.0
    assert demo["plot"].is_file() and demo["plot"].stat().st_size > 10_000
    # the held-out cases are in no training split
    splits = json.loads((demo["workspace"] / "nnUNet_preprocessed" / KITS_NAME / "splits_final.json").read_text())
    trained = {c for fold in splits for c in fold["train"] + fold["val"]}
    assert len(results["test_cases"]) == 3 and not trained & set(results["test_cases"])


def test_mots_pretraining_segments_the_large_organs_and_the_wrong_channel_fails(mots_held_out):
    """The check: the liver (labels 1, 2 of the merged all-task map) on LiTS cases and the spleen (11) on MSD spleen
    cases, never seen in training. Negative control: the same check with the labels mapped to the wrong channel
    (the liver prediction scored as the spleen) must fail.

    (The merged map lets later regions overwrite earlier ones, so mid-size organs such as the kidney are scored
    per task, not here.)"""
    liver, spleen = mots_held_out[LITS_PREFIX], mots_held_out[SPLEEN_PREFIX]
    # unified MOTS labels: 1 liver, 2 liver tumour, ..., 11 spleen
    liver_dice = [dice(np.isin(p, [1, 2]), np.isin(r, [1, 2])) for p, r in liver]
    spleen_dice = [dice(p == 11, r == 11) for p, r in spleen]
    assert np.mean(liver_dice) >= ORGAN_DICE, liver_dice
    assert np.mean(spleen_dice) >= ORGAN_DICE, spleen_dice
    wrong = [dice(np.isin(p, [1, 2]), r == 11) for p, r in spleen]
    assert np.mean(wrong) < ORGAN_DICE / 2, wrong


def test_finetuning_from_the_mots_weights_segments_the_kidneys(demo):
    pretrained = demo["results"]["pretrained"][0]["mean"]["kidney_and_mass"]["dice"]
    scratch = demo["results"]["scratch"][0]["mean"]["kidney_and_mass"]["dice"]
    assert pretrained >= KIDNEY_AND_MASS_DICE, (pretrained, scratch)


def test_negative_control_with_labels_on_the_wrong_channel_fails_the_same_check(demo, tmp_path):
    """Same fine-tuning (pretrained weights, seed, budget), but the training labels put the kidney on the
    background channel and the background on the kidney: scored against the true references it must fail."""
    from nnunet_transfer.workspace import NnUNetWorkspace

    ws = NnUNetWorkspace(demo["workspace"])
    source, control = ws.raw / KITS_NAME, ws.raw / CONTROL_NAME
    shutil.copytree(source, control)
    for label in (control / "labelsTr").glob("*.nii.gz"):
        img = sitk.ReadImage(str(label))
        seg = sitk.GetArrayFromImage(img)
        swapped = np.where(seg == 0, 1, np.where(seg == 1, 0, seg)).astype(seg.dtype)
        out = sitk.GetImageFromArray(swapped)
        out.CopyInformation(img)
        sitk.WriteImage(out, str(label))
    ws.cli("align-plans", "-s", MOTS_ID, "-t", CONTROL_ID, "-sp", DEMO_PLANS, "-tp", ALIGNED_PLANS)
    shutil.copy(ws.preprocessed / KITS_NAME / "splits_final.json", ws.preprocessed / CONTROL_NAME)
    checkpoint = ws.model_folder(MOTS_NAME, MOTS_TRAINER, "3d_fullres", DEMO_PLANS) / "fold_0" / "checkpoint_final.pth"
    trainer = trainer_name("pretrained", 0)
    ws.train(CONTROL_ID, "3d_fullres", "0", trainer, "-pretrained_weights", str(checkpoint), plans=ALIGNED_PLANS)
    out = tmp_path / "pred"
    predict_folder(ws, ws.model_folder(CONTROL_NAME, trainer, "3d_fullres", ALIGNED_PLANS), 0,
                   ws.root / "demo_eval" / "images", out)
    result = evaluate_kits21(out, ws.root / "demo_eval" / "references")
    assert result["mean"]["kidney_and_mass"]["dice"] < KIDNEY_AND_MASS_DICE / 2, result["mean"]


def test_a_seed_reproduces_a_fine_tuning_exactly(demo):
    """nnU-Net seeds nothing itself; the demo's variants do: two runs with one seed give bit-identical weights
    (initialisation, patch sampling and augmentation all drawn from the seeded generators)."""
    import torch

    from nnunet_transfer.pretrained.safe_load import read_checkpoint_file
    from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source

    ws = NnUNetWorkspace(demo["workspace"])
    name = "KiTS21HECTrainer_seedCheck"
    ws.write_trainers("seed_check", [trainer_variant_source(name, "KiTS21HECTrainer", epochs=1, iterations=2,
                                                            val_iterations=1, seed=7, final_validation=False)])
    weights = []
    for _ in range(2):
        ws.train(KITS_ID, "3d_fullres", "0", name, plans=ALIGNED_PLANS)
        fold = ws.model_folder(KITS_NAME, name, "3d_fullres", ALIGNED_PLANS) / "fold_0"
        weights.append(read_checkpoint_file(fold / "checkpoint_final.pth")["network_weights"])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), f"{key} differs between two runs with seed 7"
