"""The checks every recipe's ``--scale tiny`` run must pass. Each ``tests/e2e/test_e2e_recipe_*.py`` (one file per
recipe, so that the test workers share the runs out) names its recipe in ``RECIPE``; the ``tiny_run`` fixture of
``tests/e2e/conftest.py`` runs it once per file, and the file imports the shared test below."""

from __future__ import annotations

import json
import math
from pathlib import Path

from nnunet_transfer.recipes.catalog import RECIPES
from nnunet_transfer.recipes.runner import RESULTS_JSON, RESULTS_MD, run_recipe


def run_tiny(name: str, root: Path) -> tuple:
    """(workspace, results) of recipe ``name`` run at tiny scale in ``root/name``."""
    return root / name, run_recipe(name, root / name, "tiny")


def test_tiny_recipe_runs_every_arm_and_writes_the_papers_table(request, tiny_run) -> None:
    """Every arm ran with seed 0 and scored in [0, 1]; the paper's table and the command log are complete."""
    name, (workspace, results) = request.module.RECIPE, tiny_run
    recipe = RECIPES[name]
    assert json.loads((workspace / RESULTS_JSON).read_text()) == json.loads(json.dumps(results))
    assert results["scale"] == "tiny" and results["seeds"] == [0]
    for condition, arms in results["runs"].items():
        assert set(arms) == set(recipe.arm_names)
        for arm, runs in arms.items():
            assert [r["seed"] for r in runs] == [0]
            for structure, metric, _ in recipe.columns:
                assert 0.0 <= runs[0]["mean"][structure][metric] <= 1.0
        for column in results["summary"][condition].values():
            assert set(column["differences"]) == set(recipe.arm_names[1:])
            assert all(math.isfinite(v) for d in column["differences"].values() for v in d)
    table = (workspace / RESULTS_MD).read_text()
    assert all(title in table for _, _, title in recipe.columns)
    assert f"paired diff {recipe.arm_names[1]} - {recipe.arm_names[0]}" in table
    log = (workspace / "commands.log").read_text()
    assert "nnUNetv2_train" in log and "exit 0" in log and "exit 1" not in log
