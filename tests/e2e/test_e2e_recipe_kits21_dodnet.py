"""End to end: the kits21-dodnet recipe at ``--scale tiny`` (a smoke run of every step through the real
``nnunet-transfer``/``nnUNetv2_*`` commands).
"""

from __future__ import annotations

import pytest

from support.tiny_recipes import check_tiny_run, run_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple:
    return run_tiny("kits21-dodnet", tmp_path_factory.mktemp("recipe_tiny"))


def test_tiny_recipe_runs_every_arm_and_writes_the_papers_table(tiny_run):
    check_tiny_run("kits21-dodnet", *tiny_run)
