"""The demo's pieces that need no training: splits, plans variant, statistics and their verdicts, seeding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnunet_transfer.recipes.demo import (DemoConfig, comparison_table, demo_features, demo_splits, mean_sd, summarise,
                                  verdict, write_demo_plans)
from nnunet_transfer.utils.seeding import seed_everything
from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.workspace import trainer_variant_source


def test_splits_hold_out_test_cases_and_nest_the_labelled_subsets():
    ids = [f"case_{i:05d}" for i in range(16)]
    folds, test = demo_splits(ids, [2, 4, 8], val_cases=2, test_cases=6)
    assert test == ids[-6:]
    for fold in folds:
        assert not set(fold["train"] + fold["val"]) & set(test)
        assert fold["val"] == ids[8:10] and not set(fold["train"]) & set(fold["val"])
    assert [len(f["train"]) for f in folds] == [2, 4, 8]
    assert folds[0]["train"] == folds[1]["train"][:2] == folds[2]["train"][:2]
    with pytest.raises(ValueError, match="need 16"):
        demo_splits(ids[:15], [2, 4, 8], 2, 6)


def test_config_counts_cases_and_trainings_and_refuses_nonsense():
    config = DemoConfig(target_cases=(8, 2, 4, 4), seeds=(0, 1, 2))
    assert config.target_cases == (2, 4, 8) and config.kits_cases == 8 + 2 + 6
    assert config.trainings == 1 + 3 * 3 * 2
    with pytest.raises(ValueError, match="target-cases"):
        DemoConfig(target_cases=(0,))
    with pytest.raises(ValueError, match="seed"):
        DemoConfig(seeds=())


def test_demo_plans_narrow_only_the_network(tmp_path):
    plans = {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {
        "data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [16, 48, 48],
        "architecture": {"arch_kwargs": {"features_per_stage": [32, 64, 128, 256, 320], "n_stages": 5}}}}}
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(plans))
    out = json.loads(write_demo_plans(tmp_path, base=8, cap=64).read_text())
    cfg = out["configurations"]["3d_fullres"]
    assert out["plans_name"] == "nnUNetDemoPlans"
    assert cfg["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 64, 64] == demo_features(5)
    assert cfg["data_identifier"] == "nnUNetPlans_3d_fullres" and cfg["patch_size"] == [16, 48, 48]
    assert json.loads((tmp_path / "nnUNetPlans.json").read_text()) == plans  # nnU-Net's plans stay as they were


def test_demo_plans_take_a_patch_that_fits_the_network_and_refuse_one_that_does_not(tmp_path):
    plans = {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {
        "patch_size": [20, 48, 48], "architecture": {"arch_kwargs": {
            "features_per_stage": [32, 64, 128, 256], "n_stages": 4,
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]}}}}}
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(plans))
    out = json.loads(write_demo_plans(tmp_path, 8, 64, patch_size=(16, 32, 32)).read_text())
    assert out["configurations"]["3d_fullres"]["patch_size"] == [16, 32, 32]
    with pytest.raises(InvalidValueError, match=r"multiple of its total stride \[4, 8, 8\]"):
        write_demo_plans(tmp_path, 8, 64, patch_size=(16, 36, 32))
    with pytest.raises(InvalidValueError, match=r"multiple of its total stride \[4, 8, 8\]"):
        write_demo_plans(tmp_path, 8, 64, patch_size=(16, 32, 32, 32))  # a 4th axis: refused, not an IndexError
    assert DemoConfig().pretraining_key()["patch_size"] == list(DemoConfig().patch_size)


def _runs(scratch, pretrained):
    return {m: [{"seed": s, "mean": {"kidney_and_mass": {"dice": v}}} for s, v in enumerate(vals)]
            for m, vals in (("scratch", scratch), ("pretrained", pretrained))}


def test_summary_pairs_by_seed_and_the_verdict_follows_the_spread():
    clear = summarise(_runs([0.40, 0.45, 0.42], [0.80, 0.83, 0.81]))["kidney_and_mass"]
    assert clear["difference"][0] == pytest.approx(np.mean([0.40, 0.38, 0.39]))
    assert clear["scratch"] == pytest.approx(mean_sd([0.40, 0.45, 0.42]))
    assert verdict(clear["difference"], clear["seeds"]).startswith("clear gain")
    noisy = summarise(_runs([0.0, 0.85, 0.87], [0.86, 0.82, 0.85]))["kidney_and_mass"]
    assert verdict(noisy["difference"], noisy["seeds"]).startswith("gain small against the spread")
    worse = summarise(_runs([0.8, 0.8, 0.8], [0.7, 0.75, 0.7]))["kidney_and_mass"]
    assert verdict(worse["difference"], worse["seeds"]) == "no gain"
    assert verdict((0.3, 0.0), 1).startswith("one seed")
    assert verdict((0.004, 0.001), 2).startswith("gain below 0.02")  # consistent, but too small to matter
    table = comparison_table(summarise(_runs([0.4, 0.5], [0.8, 0.9])))
    assert "kidney_and_mass" in table and "+0.400" in table


def test_seed_everything_fixes_torch_numpy_and_python():
    import random

    def draw():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()

    seed_everything(5)
    a = draw()
    seed_everything(5)
    assert draw() == a
    seed_everything(6)
    assert draw() != a


def test_variant_source_seeds_before_nnunet_builds_anything_and_can_skip_final_validation():
    src = trainer_variant_source("X", "KiTS21HECTrainer", seed=3, final_validation=False)
    init = src.index("def __init__")
    assert src.index("seed_everything(3)", init) < src.index("super().__init__", init)
    assert "def perform_actual_validation" in src
    compile(src, "variant", "exec")
    plain = trainer_variant_source("Y", "KiTS21HECTrainer")
    assert "seed_everything" not in plain and "perform_actual_validation" not in plain


def test_pretraining_cache_is_reused_only_for_the_same_settings_and_bytes(tmp_path):
    from nnunet_transfer.recipes.demo import PRETRAINING_RECORD, pretraining_cached
    from nnunet_transfer.utils.hashing import sha256_of_file as _sha256

    checkpoint = tmp_path / "fold_0" / "checkpoint_final.pth"
    checkpoint.parent.mkdir()
    torch.save({"network_weights": {"w": torch.ones(2)}}, checkpoint)
    key = DemoConfig().pretraining_key()
    assert pretraining_cached(checkpoint, key) is None  # no record: train
    (checkpoint.parent / PRETRAINING_RECORD).write_text(json.dumps({"key": key, "sha256": _sha256(checkpoint)}))
    assert pretraining_cached(checkpoint, key) == _sha256(checkpoint)
    assert pretraining_cached(checkpoint, DemoConfig(pretrain_epochs=3).pretraining_key()) is None
    assert pretraining_cached(checkpoint, DemoConfig(kidney_lesions="standard").pretraining_key()) is None
    torch.save({"network_weights": {"w": torch.zeros(2)}}, checkpoint)  # other bytes than recorded
    assert pretraining_cached(checkpoint, key) is None


def test_side_by_side_fine_tunings_share_the_cores_and_the_time_estimate_counts_rounds(monkeypatch):
    from nnunet_transfer.recipes import demo

    monkeypatch.setattr(demo.os, "cpu_count", lambda: 2)
    assert DemoConfig(jobs=2).threads_per_job == 1 and DemoConfig(jobs=1).threads_per_job == 2
    with pytest.raises(ValueError, match="jobs"):
        DemoConfig(jobs=0)
    # the defaults took 11.5 min on an idle 2-core machine whose estimated step was 0.08 s (docs/demo.md)
    two = demo.estimate_minutes(DemoConfig(), 0.08)
    assert 10.5 <= two <= 12.5
    cached = demo.estimate_minutes(DemoConfig(jobs=2), 0.08, cached_pretraining=True)
    assert cached < two - 1.0  # the pretrained side waits for the pretraining
    # one training at a time counts every training in one row
    one = demo.estimate_minutes(DemoConfig(jobs=1), 0.08)
    assert one > two and one < demo.estimate_minutes(DemoConfig(jobs=1, seeds=(0, 1, 2, 3, 4, 5)), 0.08)
    src = trainer_variant_source("Z", "KiTS21HECTrainer", seed=1, threads=1)
    assert src.index("torch.set_num_threads(1)") < src.index("super().__init__")


def test_per_seed_lines_list_every_hec_and_side():
    from nnunet_transfer.recipes.demo import per_seed_lines

    runs = {m: [{"seed": s, "mean": {"kidney_and_mass": {"dice": v}, "mass": {"dice": v / 2}}}
                for s, v in enumerate(vals)] for m, vals in (("scratch", [0.05, 0.8]), ("pretrained", [0.9, 0.85]))}
    text = per_seed_lines(runs)
    assert "kidney_and_mass  scratch    0.050 / 0.800   (1 of 2 below 0.1" in text
    assert "mass             pretrained 0.450 / 0.425" in text
