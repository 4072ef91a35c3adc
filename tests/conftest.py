"""Shared fixtures: one tiny MOTS pretraining run through the real nnU-Net commands, reused by every test that
needs a pretrained checkpoint (session scope keeps CPU time down)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from nnunet_transfer.workspace import NnUNetWorkspace, trainer_variant_source

MOTS_ID = 600
MOTS_NAME = "Dataset600_MOTS"
MOTS_SHAPE = ("16", "48", "48")
TINY_MOTS = "MOTSPretrainTrainer_tiny"


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


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Unit tests use tiny tensors: one intra-op thread is fastest and avoids OpenMP spin-waits on a shared CPU.
    (End-to-end tests run nnU-Net in subprocesses, which keep their own thread settings.)"""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tree_digest(root: Path) -> dict:
    """relative path -> sha1 of every file under root (hidden files included): proves sources stay untouched."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def raw(tmp_path, monkeypatch) -> Path:
    """An empty nnUNet_raw for converter tests (converters read the variable at call time)."""
    raw = tmp_path / "nnUNet_raw"
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    return raw
