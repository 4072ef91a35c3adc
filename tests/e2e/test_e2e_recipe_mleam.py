"""End to end: the mleam-prostate recipe at ``--scale tiny`` (a smoke run of every step through the real
``nnunet-transfer``/``nnUNetv2_*`` commands).
"""

from __future__ import annotations

import pytest

from support.tiny_recipes import test_tiny_recipe_runs_every_arm_and_writes_the_papers_table  # noqa: F401

pytestmark = pytest.mark.slow
RECIPE = "mleam-prostate"
