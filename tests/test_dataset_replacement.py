"""A dataset is never lost or replaced unasked, in the Python API exactly as in the CLI: ``force`` is checked by the
converters themselves, one run at a time per dataset id (a lock), a run killed while replacing a dataset is undone by
the next run (which then refuses without ``force``), leftovers of killed runs are cleaned, linked datasets are
refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nnunet_transfer.cli.main import main
from nnunet_transfer.data.convert_kvasir import convert_kvasir
from nnunet_transfer.data.existing_dataset import DatasetExistsError
from nnunet_transfer.data.synthetic import synth_kvasir
from nnunet_transfer.errors import BusyError


@pytest.fixture(scope="module")
def kvasir_source(tmp_path_factory):
    src = tmp_path_factory.mktemp("kvasir") / "Kvasir-SEG"
    synth_kvasir(src, cases=2, size=(32, 32))
    return src


def _user_file(dataset: Path) -> Path:
    notes = dataset / "my_notes.txt"
    notes.write_text("the user's own file")
    return notes


def test_python_api_refuses_to_replace_without_force(raw, kvasir_source):
    dataset = convert_kvasir(kvasir_source, 5)
    notes = _user_file(dataset)
    with pytest.raises(DatasetExistsError, match="already exists.*my_notes.txt.*force=True"):
        convert_kvasir(kvasir_source, 5)
    assert notes.read_text() == "the user's own file"
    assert convert_kvasir(kvasir_source, 5, force=True) == dataset
    assert not notes.exists() and (dataset / "dataset.json").is_file()
