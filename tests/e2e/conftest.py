"""Fixtures of the end-to-end tests: one tiny MOTS pretraining run through the real nnU-Net commands, reused by
every test that needs a pretrained checkpoint (session scope keeps CPU time down). Its names are in
``support.mots_run``.

The folder has no ``__init__.py``: pytest's default ("prepend") import mode imports each test file by its basename,
so a file here must not share its name with one in ``tests/`` (hence the ``test_e2e_`` prefix)."""

from __future__ import annotations

import json

import pytest

from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source
from support.mots_run import MOTS_ID, MOTS_NAME, MOTS_SHAPE, TINY_MOTS
from support.tiny_recipes import run_tiny


@pytest.fixture(scope="session")
def mots_workspace(tmp_path_factory) -> NnUNetWorkspace:
    """synth mots -> convert mots -> nnUNetv2_plan_and_preprocess (3d_fullres)."""
    ws = NnUNetWorkspace(tmp_path_factory.mktemp("mots_ws"))
    ws.cli("synth", "mots", ws.root / "sources", "--cases", "2", "--seed", "3", "--shape", *MOTS_SHAPE)
    ws.cli("convert", "mots", ws.root / "sources", "-d", MOTS_ID)
    ws.nnunet("nnUNetv2_plan_and_preprocess", "-d", MOTS_ID, "-c", "3d_fullres", "-np", "2")
    ws.write_trainers("tiny_mots", [trainer_variant_source(TINY_MOTS, "MOTSPretrainTrainer")])
    return ws


@pytest.fixture(scope="session")
def mots_pretrained(mots_workspace) -> dict:
    """A 1-epoch MOTS pretraining (fold 0) through the real nnUNetv2_train."""
    ws = mots_workspace
    log = ws.train(MOTS_ID, "3d_fullres", "0", TINY_MOTS)
    folder = ws.model_folder(MOTS_NAME, TINY_MOTS, "3d_fullres")
    return {"workspace": ws, "log": log, "folder": folder,
            "checkpoint": folder / "fold_0" / "checkpoint_final.pth",
            "dataset_json": json.loads((ws.raw / MOTS_NAME / "dataset.json").read_text())}


@pytest.fixture(scope="module")
def tiny_run(request, tmp_path_factory) -> tuple:
    """(workspace, results) of the test file's ``RECIPE`` run at ``--scale tiny`` (once per file)."""
    return run_tiny(request.module.RECIPE, tmp_path_factory.mktemp("recipe_tiny"))
