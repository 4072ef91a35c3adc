"""Nothing the user has is lost, damaged inputs are refused naming the file, and every failure says what to do:
``predict-export`` verifies before installing and never replaces a different model without ``--force``,
``convert`` never replaces a dataset without ``--force``, truncated/NaN images are caught, and the CLI prints one
line per user error (with close matches for misspelled names)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer.cli.main import main
from nnunet_transfer.data.errors import ConversionError
from nnunet_transfer.data.synthetic import synth_kits21, synth_kvasir
from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.inference.export import (MANIFEST_NAME, ChecksumMismatchError, ModelExistsError, export_model,
                                    install_and_predict, install_model)
from nnunet_transfer.pretrained.safe_load import UnsafeCheckpointError
from support.booby_trap import Payload
from test_export import CONFIG, DATASET, MODEL_REL, TRAINER, _write_inputs, _write_tiny_model
from test_untrusted_files import damaged_checkpoints


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    """Two exports of the same model name with different weights (a and b)."""
    root = tmp_path_factory.mktemp("zips")
    out = {}
    for name, fold in (("a", 0), ("b", 1)):
        results = root / f"results_{name}"
        model_dir = _write_tiny_model(results, folds=(fold,))
        if fold == 1:  # same model name and fold as a, other weights
            os.rename(model_dir / "fold_1", model_dir / "fold_0")
            ckpt = model_dir / "fold_0" / "checkpoint_final.pth"
            content = torch.load(ckpt, weights_only=False)
            content["init_args"]["fold"] = 0
            torch.save(content, ckpt)
        out[name] = export_model(DATASET, [CONFIG], TRAINER, folds=(0,), output_zip=root / f"{name}.zip",
                                 results_dir=results)
    return out


def rewrite_zip(src: Path, dst: Path, replace: dict, fix_manifest: bool) -> Path:
    """Copy a zip, replacing members (name -> bytes); optionally update the manifest checksums to match."""
    with zipfile.ZipFile(src) as zin:
        members = {i.filename: zin.read(i.filename) for i in zin.infolist()}
    members.update(replace)
    if fix_manifest:
        manifest = json.loads(members[MANIFEST_NAME])
        for name in replace:  # an attacker rewrites every checksum the manifest holds
            for listing in ("checkpoint_sha256", "members_sha256"):
                if name in manifest[listing] or listing == "members_sha256":
                    manifest[listing][name] = hashlib.sha256(replace[name]).hexdigest()
        members[MANIFEST_NAME] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w") as zout:
        for name, data in members.items():
            zout.writestr(name, data)
    return dst


def booby_trapped_checkpoint_bytes(tmp_path: Path, marker: Path) -> bytes:
    path = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "init_args": {}, "trainer_name": TRAINER, "hook": Payload(marker)}, path)
    return path.read_bytes()


CKPT = f"{MODEL_REL}/fold_0/checkpoint_final.pth"


# ---------------------------------------------------------------------------------------------- predict-export

def test_a_booby_trapped_zip_with_a_matching_manifest_installs_nothing(zips, tmp_path):
    marker = tmp_path / "payload_ran"
    evil = rewrite_zip(zips["a"], tmp_path / "evil.zip", {CKPT: booby_trapped_checkpoint_bytes(tmp_path, marker)},
                       fix_manifest=True)
    _write_inputs(tmp_path / "in")
    results = tmp_path / "ws" / "nnUNet_results"
    with pytest.raises(UnsafeCheckpointError, match="checkpoint_final.pth"):
        install_and_predict(evil, tmp_path / "in", tmp_path / "pred", workspace=tmp_path / "ws", num_processes=0)
    assert list(results.iterdir()) == []  # neither the model nor a staging folder is left
    assert not marker.exists() and not (tmp_path / "pred").exists()


def test_a_tampered_zip_leaves_the_users_own_model_untouched(zips, tmp_path):
    results = tmp_path / "results"
    install_model(zips["a"], results)
    own = results / CKPT
    before = digest(own)
    with zipfile.ZipFile(zips["b"]) as zf:
        data = bytearray(zf.read(CKPT))
    data[-20:-10] = bytes(10)
    tampered = rewrite_zip(zips["b"], tmp_path / "tampered.zip", {CKPT: bytes(data)}, fix_manifest=False)
    with pytest.raises(ChecksumMismatchError, match="corrupted or was replaced"):
        install_model(tampered, results, force=True)
    assert digest(own) == before
    assert sorted(p.name for p in results.iterdir()) == [DATASET]


def test_a_different_model_is_replaced_only_with_force(zips, tmp_path):
    results = tmp_path / "results"
    install_model(zips["a"], results)
    a = digest(results / CKPT)
    install_model(zips["a"], results)  # the same model again: fine, nothing changes
    with pytest.raises(ModelExistsError, match="--force"):
        install_model(zips["b"], results)
    assert digest(results / CKPT) == a
    install_model(zips["b"], results, force=True)
    assert digest(results / CKPT) != a
    assert [p.name for p in (results / DATASET).iterdir()] == [MODEL_REL.split("/")[1]]  # nothing set aside left


def test_a_second_install_of_the_same_dataset_refuses_while_the_first_runs(zips, tmp_path):
    from nnunet_transfer.errors import BusyError
    from nnunet_transfer.utils.locks import exclusive_lock, lock_file_for

    results = tmp_path / "results"
    results.mkdir()
    with exclusive_lock(lock_file_for(results, DATASET), "a model"):
        with pytest.raises(BusyError, match=f"process {os.getpid()}.*wait until"):
            install_model(zips["a"], results)
    assert list(results.iterdir()) == []
    install_model(zips["a"], results)
    assert sorted(p.name for p in results.iterdir()) == [DATASET]  # no lock file left


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_leftovers_of_killed_installs_and_exports_are_cleaned_and_a_set_aside_model_restored(zips, tmp_path, capsys):
    results = tmp_path / "results"
    install_model(zips["a"], results)
    model = results / MODEL_REL
    a = digest(results / CKPT)
    dead = _dead_pid()
    staging = results / f".nnunet_transfer_install-{dead}-x1y2"  # a SIGKILLed install's extraction
    staging.mkdir()
    (staging / "big.pth").write_bytes(b"0" * 1000)
    # an install killed between the two renames of replacing the model: the user's model was set aside
    aside = model.with_name(f".{model.name}.replaced-{dead}-0123abcd")
    os.rename(model, aside)
    with pytest.raises(ModelExistsError):  # without force: the restored model is not replaced
        install_model(zips["b"], results)
    err = capsys.readouterr().err
    assert f"restoring {model}" in err and f"removing {staging}" in err
    assert digest(results / CKPT) == a and not aside.exists() and not staging.exists()
    # exports: a killed one's model.zip.partial-PID (and an older version's model.zip.partial) are removed by the
    # next export to the same file; a running export's file is left alone
    out_zip = tmp_path / "export" / "model.zip"
    out_zip.parent.mkdir()
    stale, legacy, running = (out_zip.with_name(n) for n in (f"model.zip.partial-{dead}", "model.zip.partial",
                                                              f"model.zip.partial-{os.getppid()}"))
    for f in (stale, legacy, running):
        f.write_bytes(b"0" * 100)
    export_model(DATASET, [CONFIG], TRAINER, folds=(0,), output_zip=out_zip, results_dir=zips["a"].parent / "results_a")
    assert sorted(p.name for p in out_zip.parent.iterdir()) == sorted(["model.zip", running.name])


def test_a_checkpoint_not_listed_in_the_manifest_is_refused(zips, tmp_path):
    marker = tmp_path / "payload_ran"
    extra = f"{MODEL_REL}/fold_0/checkpoint_best.pth"
    evil = rewrite_zip(zips["a"], tmp_path / "extra.zip", {extra: booby_trapped_checkpoint_bytes(tmp_path, marker)},
                       fix_manifest=True)
    with pytest.raises(UnsafeCheckpointError, match="not listed"):
        install_model(evil, tmp_path / "results")
    assert list((tmp_path / "results").iterdir()) == [] and not marker.exists()


def test_predict_export_cli_prints_one_line_and_names_force(zips, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    install_model(zips["a"], results)
    monkeypatch.setenv("nnUNet_results", str(results))
    _write_inputs(tmp_path / "in")
    assert main(["predict-export", str(zips["b"]), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                 "-device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnunet-transfer predict-export: error: ") and "--force" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------- convert

@pytest.fixture
def kvasir_src(tmp_path):
    synth_kvasir(tmp_path / "kvasir", cases=3, size=(32, 32))
    return tmp_path / "kvasir"


def test_convert_over_an_existing_dataset_refuses_without_force(raw, kvasir_src, capsys):
    assert main(["convert", "kvasir", str(kvasir_src), "-d", "5"]) == 0
    dataset = raw / "Dataset005_KvasirSEG"
    notes = dataset / "my_notes.txt"
    notes.write_text("the user's own file")
    capsys.readouterr()
    assert main(["convert", "kvasir", str(kvasir_src), "-d", "5"]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "my_notes.txt" in err and "--force" in err
    assert notes.read_text() == "the user's own file"
    # another converter over it (--name chosen to match) is refused just the same
    assert main(["convert", "kits21", str(kvasir_src), "-d", "5", "--name", "KvasirSEG"]) == 1
    assert notes.is_file()
    assert main(["convert", "kvasir", str(kvasir_src), "-d", "5", "--force"]) == 0
    assert not notes.exists() and (dataset / "dataset.json").is_file()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_staging_folders_of_killed_conversions_are_cleaned_up(raw, kvasir_src, capsys):
    raw.mkdir(parents=True)
    pid = dead_pid()
    staging = raw / f".Dataset005_KvasirSEG.staging-{pid}-0123abcd"
    (staging / "imagesTr").mkdir(parents=True)
    # killed between the two renames of publishing: the previous dataset was set aside and must come back
    previous = raw / f".Dataset006_Old.old-{pid}-0123abcd"
    previous.mkdir()
    (previous / "dataset.json").write_text("{}")
    assert main(["convert", "kvasir", str(kvasir_src), "-d", "5"]) == 0
    out = capsys.readouterr().out
    assert not staging.exists() and "interrupted conversion" in out
    assert (raw / "Dataset006_Old" / "dataset.json").is_file() and not previous.exists()


@pytest.fixture(scope="module")
def kits_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("kits") / "kits21"
    synth_kits21(src, cases=2, seed=0, shape=(8, 24, 24))
    return src


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_uncompressed_truncated(path: Path) -> None:
    image = sitk.ReadImage(str(path))
    plain = path.with_name("imaging_plain.nii")
    sitk.WriteImage(image, str(plain), False)
    data = plain.read_bytes()
    plain.unlink()
    # the same file name the converter looks for, holding an uncompressed, truncated NIfTI behind a valid gzip
    import gzip
    path.write_bytes(gzip.compress(data[: len(data) - 200]))


def write_nan(path: Path) -> None:
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(image)
    arr[0, 0, 0], arr[1, 1, 1] = np.nan, np.inf
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))


@pytest.mark.parametrize("damage, pattern", [
    (truncate, "damaged or truncated"),
    (write_uncompressed_truncated, "is truncated: its header describes"),
    (write_nan, "2 NaN or infinite voxels"),
], ids=["truncated-gzip", "short-data", "nan-inf"])
def test_damaged_images_are_refused_by_the_converter(raw, kits_src, tmp_path, damage, pattern):
    from nnunet_transfer.data.convert_kits import convert_kits

    src = tmp_path / "kits21"
    shutil.copytree(kits_src, src)
    image = next(src.rglob("case_00000/imaging.nii.gz"))  # the clone layout: kits21/data/case_XXXXX/
    damage(image)
    with pytest.raises(ConversionError, match=f"{image}.*{pattern}|{pattern}"):
        convert_kits(src, 611)
    assert not (raw / "Dataset611_KiTS21").exists()


def test_evaluate_kits21_refuses_a_truncated_prediction(kits_src, tmp_path):
    from nnunet_transfer.evaluation.kits import evaluate_kits21

    pred = tmp_path / "pred"
    pred.mkdir()
    for case in ("case_00000", "case_00210"):
        shutil.copy(next(kits_src.rglob(f"{case}/aggregated_MAJ_seg.nii.gz")), pred / f"{case}.nii.gz")
    truncate(pred / "case_00210.nii.gz")
    with pytest.raises(NnUNetTransferError, match="case_00210.nii.gz is damaged or truncated"):
        evaluate_kits21(pred, kits_src)


# ---------------------------------------------------------------------------------------------- evaluate mots

def _label_file(path: Path, values) -> None:
    arr = np.zeros((4, 6, 6), np.uint8)
    arr[1:3, 1:4, 1:4] = values
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))


def test_evaluate_mots_warns_about_missing_predictions_and_refuses_unknown_labels(tmp_path, capsys):
    from nnunet_transfer.evaluation.partial_label import evaluate_partial_label_folder

    gt, pred = tmp_path / "labelsTr", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    for case in ("liver_1", "liver_2"):
        _label_file(gt / f"{case}.nii.gz", 1)
    _label_file(pred / "liver_1.nii.gz", 1)
    result = evaluate_partial_label_folder(pred, gt, {"liver_1": 0, "liver_2": 0})
    assert result["missing_predictions"] == ["liver_2"]
    assert "1 reference case(s)" in capsys.readouterr().err
    _label_file(pred / "liver_2.nii.gz", 42)
    with pytest.raises(NnUNetTransferError, match=r"liver_2.nii.gz holds label values \[42\]"):
        evaluate_partial_label_folder(pred, gt, {"liver_1": 0, "liver_2": 0})


def test_evaluate_mots_without_dataset_json(tmp_path, capsys):
    gt, pred = tmp_path / "Dataset600_MOTS" / "labelsTr", tmp_path / "pred"
    gt.mkdir(parents=True), pred.mkdir()
    _label_file(gt / "liver_1.nii.gz", 1)
    _label_file(pred / "liver_1.nii.gz", 1)
    assert main(["evaluate", "mots", str(pred), str(gt)]) == 1
    assert "--dataset-json" in capsys.readouterr().err
    from nnunet_transfer.data.mots_tasks import DATASET_JSON_KEY  # a dataset.json next to labelsTr is found

    dataset_json = {"file_ending": ".nii.gz", DATASET_JSON_KEY: {"case_to_task": {"liver_1": 0}}}
    (gt.parent / "dataset.json").write_text(json.dumps(dataset_json))
    assert main(["evaluate", "mots", str(pred), str(gt)]) == 0


# ---------------------------------------------------------------------------------------------- records, CLI

def _plans(preprocessed: Path, dataset: str = "Dataset612_Rec") -> Path:
    folder = preprocessed / dataset
    folder.mkdir(parents=True)
    plans = folder / "nnUNetPlans.json"
    plans.write_text(json.dumps({"configurations": {"3d_fullres": {"patch_size": [8, 8, 8]}}}))
    return plans


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "booby-trapped"])
def test_set_pretrained_opens_the_checkpoint_before_writing_the_record(kind, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    plans = _plans(tmp_path / "pre")
    before = plans.read_text()
    marker = tmp_path / "payload_ran"
    if kind == "booby-trapped":
        ckpt = tmp_path / "evil.pth"
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": Payload(marker)}, ckpt)
    else:
        ckpt = damaged_checkpoints(tmp_path / "bad")[kind]
    assert main(["set-pretrained", str(ckpt), "-d", "612"]) == 1
    err = capsys.readouterr().err
    assert str(ckpt) in err and err.count("\n") == 1 and "Traceback" not in err
    assert plans.read_text() == before and not marker.exists()


def test_a_misspelled_trainer_gets_a_close_match(tmp_path, capsys):
    assert main(["export", "-d", "1", "-tr", "KiTS21HECTrainr", "-o", str(tmp_path / "m.zip")]) == 1
    err = capsys.readouterr().err
    assert "did you mean 'KiTS21HECTrainer'" in err and "Traceback" not in err


def test_doctor_says_when_nnunet_raw_is_a_file(tmp_path, monkeypatch):
    from nnunet_transfer.doctor import check_paths

    path = tmp_path / "not_a_folder"
    path.write_text("")
    monkeypatch.setenv("nnUNet_raw", str(path))
    ok, message = check_paths()[0]
    assert not ok and "is a file, not a folder" in message and "mkdir" not in message


@pytest.mark.parametrize("bug_type", [ValueError, RuntimeError, TypeError, KeyError, AttributeError])
def test_unexpected_exceptions_keep_their_traceback(bug_type, monkeypatch, capsys):
    """A ValueError/RuntimeError raised by a bug is not mistaken for a user error: traceback, then a line asking to
    report it (exit 2); ``--debug`` lets it through as it is."""
    import nnunet_transfer.doctor as doctor

    def bug() -> int:
        raise bug_type("a bug, not the user's fault")

    monkeypatch.setattr(doctor, "run_doctor", bug)
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and f"{bug_type.__name__}: " in err
    assert err.rstrip().splitlines()[-1].startswith("nnunet-transfer: this is a bug") and "error:" not in err
    with pytest.raises(bug_type):
        main(["--debug", "doctor"])


def test_user_errors_and_os_errors_are_one_line(monkeypatch, capsys, tmp_path):
    import nnunet_transfer.doctor as doctor
    from nnunet_transfer.errors import InvalidValueError

    def user_error() -> int:
        raise InvalidValueError("the value 7 is not allowed", file=tmp_path / "x.json", fix="give 0..1")

    def disk_full() -> int:
        raise OSError(28, "No space left on device", str(tmp_path / "out.nii.gz"))

    for func, expected in ((user_error, "the value 7 is not allowed. Fix: give 0..1"),
                           (disk_full, f"{tmp_path / 'out.nii.gz'}: No space left on device")):
        monkeypatch.setattr(doctor, "run_doctor", func)
        assert main(["doctor"]) == 1
        err = capsys.readouterr().err
        assert err == f"nnunet-transfer doctor: error: {expected}\n"


def test_a_misspelled_dataset_name_gets_a_close_match(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    _plans(tmp_path / "pre", "Dataset601_KiTS21")
    assert main(["export", "-d", "Dataset601_KiTS2l", "-tr", "nnUNetTrainer", "-o", str(tmp_path / "m.zip")]) == 1
    assert "did you mean 'Dataset601_KiTS21'" in capsys.readouterr().err


def test_align_plans_refuses_a_bad_pretrained_file_before_writing_plans(tmp_path, monkeypatch):
    from nnunet_transfer.transfer.align import align_plans

    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    bad = damaged_checkpoints(tmp_path / "bad")["text"]
    with pytest.raises(NnUNetTransferError, match=str(bad)):
        align_plans(600, 601, pretrained_checkpoint=str(bad))
    assert not (tmp_path / "pre").exists()


def test_predict_export_of_a_file_that_is_no_zip_is_one_line(tmp_path, capsys):
    bogus = tmp_path / "model.zip"
    bogus.write_bytes(b"not a zip")
    (tmp_path / "in").mkdir()
    assert main(["predict-export", str(bogus), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                 "-device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "is not a readable model zip" in err and "Traceback" not in err
