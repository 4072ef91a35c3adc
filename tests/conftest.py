"""Shared fixtures: one tiny MOTS pretraining run, reused by every test that needs a pretrained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunet_commands import Workspace, model_folder, tiny_trainer_source

MOTS_ID = 600
MOTS_NAME = "Dataset600_MOTS"
MOTS_SHAPE = ("16", "48", "48")
TINY_MOTS = "MOTSPretrainTrainer_tiny"


@pytest.fixture(scope="session")
def mots_workspace(tmp_path_factory) -> Workspace:
    """synth mots -> convert mots -> nnUNetv2_plan_and_preprocess (3d_fullres), once per test session."""
    ws = Workspace(tmp_path_factory.mktemp("mots_ws"))
    ws.cli("synth", "mots", str(ws.root / "sources"), "--cases", "2", "--seed", "3", "--shape", *MOTS_SHAPE)
    ws.cli("convert", "mots", str(ws.root / "sources"), "-d", str(MOTS_ID))
    ws.run("nnUNetv2_plan_and_preprocess", "-d", str(MOTS_ID), "-c", "3d_fullres", "-np", "2")
    ws.add_trainers("tiny_mots", [tiny_trainer_source(TINY_MOTS, "nnunet_transfer.trainers", "MOTSPretrainTrainer")])
    return ws


@pytest.fixture(scope="session")
def mots_pretrained(mots_workspace) -> dict:
    """A 1-epoch MOTS pretraining (fold 0) through the real nnUNetv2_train; returns paths and the log."""
    ws = mots_workspace
    log = ws.train(MOTS_ID, "3d_fullres", "0", TINY_MOTS)
    folder = model_folder(ws, MOTS_NAME, TINY_MOTS, "3d_fullres")
    return {"workspace": ws, "log": log, "folder": folder,
            "checkpoint": folder / "fold_0" / "checkpoint_final.pth",
            "dataset_json": json.loads((ws.raw / MOTS_NAME / "dataset.json").read_text())}
