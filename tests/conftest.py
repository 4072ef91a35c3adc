"""Fixtures shared by every test (unit and end-to-end). Plain constants and helpers live in ``tests/support/``
(importable); the end-to-end fixtures in ``tests/e2e/conftest.py``. This file is not imported by tests."""

from __future__ import annotations

from pathlib import Path

import pytest

try:  # the property-based (fuzz) tests: short runs, no per-example deadline (the first example imports torch)
    from hypothesis import HealthCheck, settings

    settings.register_profile("nnunet_transfer", max_examples=60, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile("nnunet_transfer")
except ImportError:  # hypothesis is in the test extra; without it the fuzz tests are skipped
    pass


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
