"""Fixtures shared by every test (unit and end-to-end). Plain constants and helpers live in ``tests/support/``
(importable); the end-to-end fixtures in ``tests/e2e/conftest.py``. This file is not imported by tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Unit tests use tiny tensors: one intra-op thread is fastest and avoids OpenMP spin-waits on a shared CPU.
    (End-to-end tests run nnU-Net in subprocesses, which keep their own thread settings.)"""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def raw(tmp_path, monkeypatch) -> Path:
    """An empty nnUNet_raw for converter tests (converters read the variable at call time)."""
    raw = tmp_path / "nnUNet_raw"
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    return raw
