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


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnunet_transfer.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _env(raw: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(nnUNet_raw=str(raw), PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    return env


def test_a_second_run_on_the_same_dataset_id_refuses_while_the_first_runs(raw, kvasir_source):
    """Two processes: this one holds the dataset id's lock (as a running conversion does), the CLI in another
    process refuses at once with one line, and publishes nothing."""
    from nnunet_transfer.data.existing_dataset import dataset_lock

    raw.mkdir(parents=True)
    with dataset_lock(raw / "Dataset005_Other"):  # the lock is per id, whatever the name
        out = _cli("convert", "kvasir", str(kvasir_source), "-d", "5", "--force", env=_env(raw))
        with pytest.raises(BusyError, match=f"process {os.getpid()}.*is writing dataset"):
            convert_kvasir(kvasir_source, 5)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: another nnunet-transfer run" in lines[0] and "wait until" in lines[0]
    assert not (raw / "Dataset005_KvasirSEG").exists()
    assert sorted(p.name for p in raw.iterdir()) == []  # no lock file, no staging left
    convert_kvasir(kvasir_source, 5)  # the lock is free again


#: a conversion killed (SIGKILL) between the two renames of publishing: after the user's dataset was set aside
_KILLED_WHILE_PUBLISHING = textwrap.dedent("""
    import os, signal, sys
    real_rename = os.rename
    def rename(src, dst):
        real_rename(src, dst)
        if ".old-" in os.fspath(dst):
            os.kill(os.getpid(), signal.SIGKILL)
    os.rename = rename
    from nnunet_transfer.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_run_killed_while_replacing_is_undone_and_never_turns_into_a_replacement(raw, kvasir_source, capsys):
    dataset = convert_kvasir(kvasir_source, 5)
    notes = _user_file(dataset)
    killed = subprocess.run([sys.executable, "-c", _KILLED_WHILE_PUBLISHING, "convert", "kvasir", str(kvasir_source),
                             "-d", "5", "--force"], env=_env(raw), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not dataset.exists() and len(list(raw.glob(".Dataset005_KvasirSEG.old-*"))) == 1  # the window
    capsys.readouterr()
    # the next run without --force: the user's dataset comes back, is reported, and is NOT replaced
    assert main(["convert", "kvasir", str(kvasir_source), "-d", "5"]) == 1
    captured = capsys.readouterr()
    assert f"restoring {dataset}" in captured.out
    assert "already exists" in captured.err and "restored from .Dataset005_KvasirSEG.old-" in captured.err
    assert notes.read_text() == "the user's own file"
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset005_KvasirSEG"]


def test_leftovers_of_killed_runs_are_removed_and_those_of_running_ones_kept(raw, kvasir_source, capsys):
    raw.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    stale = raw / f".Dataset005_KvasirSEG.staging-{dead}-0123abcd"
    (stale / "imagesTr").mkdir(parents=True)
    (stale / "imagesTr" / "big.png").write_bytes(b"0" * 1000)
    running = raw / f".Dataset007_Busy.staging-{os.getppid()}-0123abcd"  # a live process (our parent)
    running.mkdir()
    convert_kvasir(kvasir_source, 5)
    assert not stale.exists() and "interrupted conversion" in capsys.readouterr().out
    assert running.is_dir()
    assert sorted(p.name for p in raw.iterdir()) == [running.name, "Dataset005_KvasirSEG"]


def test_a_linked_dataset_is_refused_with_an_explanation_and_kept(raw, kvasir_source, tmp_path, capsys):
    real = convert_kvasir(kvasir_source, 5, name="Real")
    raw.joinpath("Dataset006_KvasirSEG").symlink_to(real)
    notes = _user_file(real)
    assert main(["convert", "kvasir", str(kvasir_source), "-d", "6", "--force"]) == 1
    err = capsys.readouterr().err
    assert "is a symbolic link to" in err and "rm " in err and len(err.strip().splitlines()) == 1
    assert raw.joinpath("Dataset006_KvasirSEG").resolve() == real.resolve() and notes.is_file()
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset005_Real", "Dataset006_KvasirSEG"]


def test_a_dangling_set_aside_link_of_an_older_run_does_not_break_converting(raw, kvasir_source, tmp_path):
    """An older version replaced a linked dataset and left its link set aside (``.old-`` symlink): it is removed,
    never followed into the data it points to."""
    data = tmp_path / "elsewhere"
    data.mkdir()
    (data / "keep.txt").write_text("keep")
    raw.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dataset = convert_kvasir(kvasir_source, 5)
    link = raw / f".Dataset005_KvasirSEG.old-{int(gone.stdout)}-0123abcd"
    link.symlink_to(data)
    convert_kvasir(kvasir_source, 5, force=True)
    assert not link.is_symlink() and (data / "keep.txt").read_text() == "keep" and dataset.is_dir()
