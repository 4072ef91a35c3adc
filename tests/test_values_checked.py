"""Values are checked where they enter, each refused with one line naming the option or the file: weights that are
not finite floating-point tensors (``set-pretrained``, ``extract-encoder``), out-of-range numbers and unknown choices
of every command, a ``--c`` that lost its transfer record, a synthetic shape that does not fit in memory, and a shell
line of ``env`` that would run what a folder name holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnunet_transfer.cli.main import main
from nnunet_transfer.errors import InvalidValueError, NnUNetTransferError

BAD_TENSORS = {
    "int": torch.ones(4, 3, dtype=torch.int64),
    "bool": torch.ones(4, 3, dtype=torch.bool),
    "nan": torch.tensor([[1.0, float("nan"), 0.0]]),
    "inf": torch.tensor([[1.0, float("-inf"), 0.0]]),
}


def _checkpoint(tmp_path: Path, bad: str) -> Path:
    path = tmp_path / f"{bad}.pth"
    state = {"encoder.stages.0.conv.weight": torch.randn(4, 3), "encoder.stages.0.norm.num_batches_tracked":
             torch.tensor(3), "encoder.stages.1.conv.weight": BAD_TENSORS[bad]}
    torch.save({"network_weights": state}, path)
    return path


@pytest.fixture
def planned(tmp_path, monkeypatch) -> Path:
    """A planned dataset 612 (nnUNet_preprocessed/Dataset612_X/nnUNetPlans.json with one configuration)."""
    pre = tmp_path / "pre"
    plans = pre / "Dataset612_X" / "nnUNetPlans.json"
    plans.parent.mkdir(parents=True)
    plans.write_text(json.dumps({"configurations": {"3d_fullres": {"patch_size": [8, 8, 8]}}}))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    return plans


@pytest.mark.parametrize("bad", list(BAD_TENSORS))
def test_set_pretrained_refuses_weights_that_are_not_finite_floats(planned, tmp_path, bad, capsys):
    before = planned.read_bytes()
    assert main(["set-pretrained", str(_checkpoint(tmp_path, bad)), "-d", "612"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'encoder.stages.1.conv.weight'" in err
    assert ("NaN or infinite" if bad in ("nan", "inf") else str(BAD_TENSORS[bad].dtype)) in err
    assert planned.read_bytes() == before  # nothing recorded


@pytest.mark.parametrize("bad", list(BAD_TENSORS))
def test_extract_encoder_writes_no_weights_that_are_not_finite_floats(tmp_path, bad):
    from nnunet_transfer.transfer.encoder_export import extract_encoder

    out = tmp_path / "encoder.pth"
    with pytest.raises(InvalidValueError, match=r"encoder\.stages\.1\.conv\.weight"):
        extract_encoder(_checkpoint(tmp_path, bad), out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [f"{bad}.pth"]


def test_integer_buffers_pass_the_value_check():
    from nnunet_transfer.transfer.weight_values import check_weight_values

    check_weight_values({"bn.num_batches_tracked": torch.tensor(7), "w": torch.zeros(2)}, "x")


# ------------------------------------------------------------------------------------------ option ranges

@pytest.mark.parametrize("argv, option", [
    (["convert", "kvasir", "src", "-d", "5", "-np", "0"], "-np"),
    (["convert", "kvasir", "src", "-d", "5", "-np", "-5"], "-np"),
    (["convert", "kvasir", "src", "-d", "1000"], "-d"),
    (["set-pretrained", "ckpt", "-d", "5", "--min-fraction", "7"], "--min-fraction"),
    (["set-pretrained", "ckpt", "-d", "5", "--min-fraction", "nan"], "--min-fraction"),
    (["synth", "mots", "out", "--cases", "0"], "--cases"),
    (["synth", "kits21", "out", "--shape", "0", "32", "32"], "--shape"),
    (["align-plans", "-s", "5", "-t", "6", "-np", "0"], "-np"),
    (["predict-tasks", "-i", "i", "-o", "o", "-d", "5", "-step_size", "0"], "-step_size"),
    (["points-to-labels", "p.json", "d", "--radius-mm", "-1"], "--radius-mm"),
    (["evaluate", "kits21", "p", "g", "-np", "0"], "-np"),
    (["demo", "--epochs", "0"], "--epochs"),
])
def test_out_of_range_options_are_refused_by_the_parser(argv, option, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and ("out of range" in err or "not a" in err)


def test_align_plans_refuses_the_same_dataset_and_unknown_configurations(planned, capsys):
    other = planned.parent.parent / "Dataset613_Y"
    other.mkdir()
    assert main(["align-plans", "-s", "612", "-t", "612"]) == 1
    assert "are both Dataset612_X" in capsys.readouterr().err
    assert main(["align-plans", "-s", "612", "-t", "613", "-c", "3d_fulres", "--no-preprocess"]) == 1
    err = capsys.readouterr().err
    assert "has no configuration '3d_fulres' (did you mean '3d_fullres'?)" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in other.iterdir()) == []  # nothing written for the target


def test_an_unknown_dataset_id_is_one_line_not_a_traceback(planned, capsys):
    assert main(["align-plans", "-s", "612", "-t", "999"]) == 1
    err = capsys.readouterr().err
    assert "no dataset '999'" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ synth sizes

def test_synth_refuses_a_shape_that_does_not_fit_in_memory(tmp_path, capsys):
    assert main(["synth", "kits21", str(tmp_path / "out"), "--shape", "100000", "100000", "100000"]) == 1
    err = capsys.readouterr().err
    assert "GiB of memory per case" in err and "smaller --shape" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert main(["synth", "kvasir", str(tmp_path / "out2"), "--shape", "10000000", "10000000"]) == 1
    assert "GiB of memory per case" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ --c without a record

def _source(folder: Path, **entries) -> None:
    (folder / "transfer_source.json").write_text(json.dumps(entries))


def test_resume_without_checkpoint_needs_the_transfer_record(tmp_path):
    from nnunet_transfer.trainers.finetune import check_transfer_record

    fold = tmp_path / "fold_0"
    fold.mkdir()
    with pytest.raises(NnUNetTransferError, match="no transfer record.*without --c"):
        check_transfer_record(fold)  # killed before anything was written: which weights is unknown
    _source(fold, mode="argument", path=str(tmp_path / "w.pth"), sha256="0" * 64)
    with pytest.raises(NnUNetTransferError, match="transfer_report.json is missing.*without --c"):
        check_transfer_record(fold)  # the report was deleted after a kill in epoch 0
    _source(fold, mode="record")
    with pytest.raises(NnUNetTransferError, match="transfer_report.json is missing"):
        check_transfer_record(fold)
    (fold / "transfer_report.json").write_text("{}")
    check_transfer_record(fold)  # the record is complete: the trainer reloads the weights
    (fold / "transfer_report.json").unlink()
    _source(fold, mode="none")
    check_transfer_record(fold)  # a run without pretrained weights may start afresh


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "holds a list, not a JSON object"),
    ('{"mode": 3}', "'mode' is 3, expected a string"),
    ('{"mode": "elsewhere"}', "mode 'elsewhere' is not one of"),
    ('{"mode": "argument", "path": ["x"]}', "'path' is"),
])
def test_a_broken_transfer_source_is_one_line_naming_the_file(tmp_path, content, message):
    from nnunet_transfer.trainers.finetune import check_transfer_record

    (tmp_path / "transfer_source.json").write_text(content)
    with pytest.raises(NnUNetTransferError, match=message) as info:
        check_transfer_record(tmp_path)
    assert str(tmp_path / "transfer_source.json") in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ env in a shell

@pytest.mark.parametrize("name", ["ws $(touch MARKER) x", "ws `touch MARKER`", "it's a \"ws\" with spaces",
                                  "ws; touch MARKER", "ws\\$HOME"])
def test_env_exports_exactly_the_folder_and_runs_nothing(tmp_path, name):
    workspace = tmp_path / name
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    line = subprocess.run([sys.executable, "-m", "nnunet_transfer.cli.main", "env", "--workspace", str(workspace)],
                          capture_output=True, text=True, env=env, check=True).stdout
    script = f'{line}\nprintf "%s\\n" "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(workspace.resolve() / v) for v in
                                       ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")]
    assert not (tmp_path / "MARKER").exists()
    kept = subprocess.run(["bash", "-c", f'export nnUNet_raw=/mine\n{line}\nprintf %s "$nnUNet_raw"'],
                          capture_output=True, text=True, env=env)
    assert kept.stdout == "/mine"


# ------------------------------------------------------------------------------------------ damaged files: one line

@pytest.mark.parametrize("manifest", [b"[]", b"{not json", json.dumps({"format": "nnunet_transfer_export",
                                                                      "format_version": 1}).encode()])
def test_a_damaged_export_manifest_is_one_line(tmp_path, manifest, capsys):
    import zipfile

    from nnunet_transfer.inference.export import MANIFEST_NAME

    bad = tmp_path / "model.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(MANIFEST_NAME, manifest)
    (tmp_path / "in").mkdir()
    assert main(["predict-export", str(bad), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                 "-device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{bad}:{MANIFEST_NAME}" in err and "Traceback" not in err


@pytest.mark.parametrize("content, message", [("{", "is not valid JSON"), ('["x"]', "holds a list"),
                                              ('{"nnunet_transfer": [1]}', "case_to_task"),
                                              ('{"nnunet_transfer": {"case_to_task": {"a": "liver"}}}',
                                               "must map case ids to task indices")])
def test_a_damaged_dataset_json_is_one_line(tmp_path, content, message, capsys):
    (tmp_path / "pred").mkdir(), (tmp_path / "gt").mkdir()
    (tmp_path / "dataset.json").write_text(content)
    assert main(["evaluate", "mots", str(tmp_path / "pred"), str(tmp_path / "gt"), "--dataset-json",
                 str(tmp_path / "dataset.json")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_transfer_check_refuses_an_unknown_configuration_and_trainer_in_one_line(planned, tmp_path, capsys):
    (planned.parent / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {
        "background": 0, "kidney": 1}, "numTraining": 1, "file_ending": ".nii.gz"}))
    assert main(["transfer-check", "-d", "612", "-c", "3d_nonsense", "-tr", "nnUNetTrainer"]) == 1
    err = capsys.readouterr().err
    assert "has no configuration '3d_nonsense'" in err and len(err.strip().splitlines()) == 1
