"""The recipe catalogue and runner: list/show, the paper-scale source check, the results table, and a failing step
(no results written). The tiny runs of all five recipes are end-to-end tests (tests/e2e/test_e2e_recipe_*.py, one file per recipe)."""

from __future__ import annotations

import json
import math

import pytest

from nnunet_transfer.cli.main import main
from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.recipes import catalog
from nnunet_transfer.recipes.catalog import RECIPES, Recipe, Source, Step
from nnunet_transfer.recipes.results import markdown_table, summarise
from nnunet_transfer.recipes.runner import RESULTS_JSON, RESULTS_MD, run_recipe

NAMES = ["kits21-dodnet", "mleam-prostate", "med3d", "localization", "attention-polyp"]


def test_list_names_the_five_recipes_with_their_comparison(capsys):
    assert main(["recipe", "list"]) == 0
    out = capsys.readouterr().out
    assert [n for n in NAMES if n in out] == NAMES
    assert "scratch vs pretrained" in out and "no-edge vs edge" in out


def test_show_kits21_spells_out_the_papers_setting(capsys):
    assert main(["recipe", "show", "kits21-dodnet"]) == 0
    out = capsys.readouterr().out
    assert ("nnunet-transfer plan -d 600 -pl ResUNetASPPPaperPlanner --spacing 0.78125 0.78125 0.78125 "
            "--patch-size 128 128 128") in out
    assert "-tr KiTS21HECTrainer_100epochs" in out and "-tr nnUNetTrainer_100epochs" in out
    assert "--mots-split /path/to/MOTS_lists/MOTS_train.txt" in out and "--only-mots-overlap" in out
    assert "https://github.com/neheller/kits21" in out and "https://github.com/jianpengz/DoDNet" in out
    # the two arms share the plans: the same -p in both trainings
    trainings = [line for line in out.splitlines() if "nnUNetv2_train 601" in line]
    assert len(trainings) == 2 and all("-p nnUNetResUNetASPPPaperPlans_from600" in t for t in trainings)


def test_every_recipe_has_arms_scales_and_sources():
    for name in NAMES:
        recipe = RECIPES[name]
        assert len(recipe.arm_names) >= 2 and {"tiny", "demo"} <= set(recipe.scales)
        assert recipe.sources and all(s.url for s in recipe.sources)
        assert all(e.arm in recipe.arm_names for e in recipe.evaluations)


def test_paper_scale_checks_the_sources_first(tmp_path, capsys):
    kvasir = tmp_path / "Kvasir-SEG"
    (kvasir / "images").mkdir(parents=True)
    (kvasir / "images" / "a.jpg").write_bytes(b"")
    code = main(["recipe", "run", "attention-polyp", "--workspace", str(tmp_path / "w"), "--scale", "paper",
                 "--source", f"Kvasir-SEG={kvasir}"])
    err = capsys.readouterr().err
    assert code == 1
    assert "masks/*.jpg" in err and "https://datasets.simula.no/kvasir-seg/" in err
    assert "brain_unet" in err and "not given" in err and "mateuszbuda/brain-segmentation-pytorch" in err
    assert not (tmp_path / "w").exists()  # nothing ran, nothing written


def test_a_failing_step_stops_the_run_and_writes_no_results(tmp_path, monkeypatch):
    broken = Recipe(
        name="broken", paper="p", paper_file="p", summary="s", arms=(("a", "a"), ("b", "b")), table="arms",
        columns=(("x", "dice", "Dice"),), sources=(Source("data", "d", "https://example.org", ("*",)),),
        steps=(Step("convert a folder that is not there", "nnunet-transfer convert kits21 {SRC:data}/missing -d 998"),
               Step("never reached", "nnunet-transfer env")),
        evaluations=(), scales={}, seeds={})
    monkeypatch.setitem(RECIPES, "broken", broken)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("x")
    with pytest.raises(NnUNetTransferError, match=r"stopped at step 1: nnunet-transfer convert kits21 .*missing"):
        run_recipe("broken", tmp_path / "w", "paper", sources=[str(tmp_path)])
    assert not (tmp_path / "w" / RESULTS_JSON).exists() and not (tmp_path / "w" / RESULTS_MD).exists()
    assert "convert kits21" in (tmp_path / "w" / "commands.log").read_text()


def test_results_table_has_the_papers_columns_and_paired_differences():
    recipe = RECIPES["kits21-dodnet"]
    scores = {"scratch": (0.5, 0.7), "pretrained": (0.6, 0.9)}
    runs = {"all": {arm: [{"seed": s, "mean": {h: {"dice": v, "surface_dice": v / 2}
                                               for h in ("kidney_and_mass", "mass", "tumor")}}
                          for s, v in enumerate(values)] for arm, values in scores.items()}}
    summary = summarise(recipe, runs)
    column = summary["all"]["kidney_and_mass/dice"]
    assert column["seeds"] == [0, 1]
    assert column["pretrained"] == pytest.approx((0.75, math.sqrt(0.045)))
    assert column["differences"]["pretrained"] == pytest.approx((0.15, math.sqrt(0.005)))
    table = markdown_table(recipe, summary)
    head = table.splitlines()[0]
    assert head == "| arm | Dice_kidney | Dice_masses | Dice_tumor | SD_kidney | SD_masses | SD_tumor |"
    assert "| paired diff pretrained - scratch | +0.150 +- 0.071 |" in table
    json.dumps(summary)  # what recipe_results.json holds


def test_few_label_table_has_one_row_per_number_of_labelled_cases():
    recipe = RECIPES["localization"]
    runs = {str(n): {arm: [{"seed": 0, "mean": {"kidney_and_mass": {"dice": 0.1 * n + (arm != "scratch") * 0.05}}}]
                     for arm in recipe.arm_names} for n in (1, 2, 4)}
    rows = markdown_table(recipe, summarise(recipe, runs)).splitlines()
    assert [r.split(" | ")[0] for r in rows[2:5]] == ["| 1", "| 2", "| 4"]
    assert rows[2].endswith("+0.050 +- 0.000 |")


def test_fill_puts_workspace_and_sources_into_commands():
    command = "x {RESULTS}/a {SRC:kits21}/b {W}/c"
    assert catalog.fill(command) == "x $nnUNet_results/a /path/to/kits21/b $RECIPE_WORKSPACE/c"
    assert catalog.fill(command, "/w", {"kits21": "/k"}) == "x /w/nnUNet_results/a /k/b /w/c"


def test_dice_and_iou_of_binary_masks():
    import numpy as np

    from nnunet_transfer.recipes.comparisons import dice_iou

    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2], b[1:3] = True, True  # 8 and 8 pixels, 4 shared
    assert dice_iou(a, b) == pytest.approx((0.5, 1 / 3))
    assert dice_iou(a, a) == (1.0, 1.0) and dice_iou(b & False, a & False) == (1.0, 1.0)
    assert dice_iou(a, ~a) == (0.0, 0.0)
