"""Rough edges found by running the commands, each kept fixed: what a user sees from extract-encoder, plan-arch,
set-pretrained, predict-export, predict-tasks and the export warnings, and what the workspace helper writes and
stops."""

from __future__ import annotations

import inspect
import json
import pickle
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_transfer.cli.main import build_parser, main
from nnunet_transfer.discovery import EXT_TRAINER_VARIABLE
from nnunet_transfer.transfer.record import RECORD_KEY

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_export as tiny  # noqa: E402  (the tiny trained-model folder and inputs of the export tests)

DATASET_ID, DATASET = 987, "Dataset987_TinyExport"


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    return tmp_path


def _planned(root: Path, record: dict | None = None) -> Path:
    """A planned dataset (nnU-Net plans of a tiny PlainConvUNet), optionally with a pretrained-weights record."""
    folder = root / "nnUNet_preprocessed" / DATASET
    folder.mkdir(parents=True)
    plans = tiny.tiny_plans()
    if record is not None:
        plans["configurations"][tiny.CONFIG][RECORD_KEY] = record
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(tiny.DATASET_JSON))
    return folder / "nnUNetPlans.json"


# ---------------------------------------------------------------------------------------------------- extract-encoder


def test_extract_encoder_with_strip_prefix_succeeds(tmp_path, capsys):
    net = PlainConvUNet(1, 3, [4, 8, 8], nn.Conv3d, 3, [1, 2, 2], 1, 2, 1, True, nn.InstanceNorm3d,
                        {"affine": True}, None, None, nn.LeakyReLU, {"inplace": True})
    checkpoint = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": net.state_dict()}, checkpoint)
    out = tmp_path / "encoder.pth"
    assert main(["extract-encoder", str(checkpoint), "-o", str(out), "--strip-prefix"]) == 0
    saved = torch.load(out, weights_only=True)
    encoder = [k for k in net.state_dict() if k.startswith("encoder.")]
    assert sorted(saved) == sorted(k[len("encoder."):] for k in encoder)
    assert f"wrote {len(encoder)} encoder tensors" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------- plan-arch


def test_plan_arch_drops_the_source_record_unless_asked_and_says_so(nnunet_folders, capsys):
    from nnunet_transfer.planning.plan_arch import plan_arch

    record = {"checkpoint": str(nnunet_folders / "mots_checkpoint_final.pth"), "description": "MOTS"}
    _planned(nnunet_folders, record)
    new = plan_arch(DATASET_ID, "med3d-resnet10", preprocess=False)
    assert RECORD_KEY not in json.loads(new.read_text())["configurations"][tiny.CONFIG]
    said = capsys.readouterr().out
    assert "not carried over" in said and "mots_checkpoint_final.pth" in said

    kept = plan_arch(DATASET_ID, "med3d-resnet10", preprocess=False, plans_name="kept", keep_record=True)
    assert json.loads(kept.read_text())["configurations"][tiny.CONFIG][RECORD_KEY] == record
    assert "carried" in capsys.readouterr().out


def test_plan_arch_with_the_mleam_decoder_defaults_to_the_plans_encoder(nnunet_folders):
    from nnunet_transfer.errors import NnUNetTransferError
    from nnunet_transfer.planning.plan_arch import default_arch, plan_arch

    args = build_parser().parse_args(["plan-arch", "-d", str(DATASET_ID), "--decoder", "mleam"])
    assert args.arch is None
    assert default_arch("mleam") == "plain"
    with pytest.raises(NnUNetTransferError, match="-a/--arch"):
        default_arch(None)
    _planned(nnunet_folders)
    plans = plan_arch(DATASET_ID, decoder="mleam", preprocess=False)
    assert plans.stem == "nnUNetPlans_mleam"


# ---------------------------------------------------------------------------------------------------- set-pretrained


def test_set_pretrained_remove_without_a_record_says_nothing_was_removed(nnunet_folders, capsys):
    plans = _planned(nnunet_folders)
    before = plans.read_bytes()
    assert main(["set-pretrained", "-d", str(DATASET_ID), "--remove"]) == 0
    said = capsys.readouterr().out
    assert "nothing removed" in said and "removed the pretrained-weights record" not in said
    assert plans.read_bytes() == before

    plans.write_text(json.dumps({**json.loads(before), "configurations": {tiny.CONFIG: {
        **json.loads(before)["configurations"][tiny.CONFIG], RECORD_KEY: {"checkpoint": "/x.pth"}}}}))
    assert main(["set-pretrained", "-d", str(DATASET_ID), "--remove"]) == 0
    assert "removed the pretrained-weights record" in capsys.readouterr().out
    assert RECORD_KEY not in json.loads(plans.read_text())["configurations"][tiny.CONFIG]


# ---------------------------------------------------------------------------------------------------- predict-tasks


def test_predict_tasks_takes_nnunets_spelling_of_disable_tta():
    parser = build_parser()
    base = ["predict-tasks", "-i", "in", "-o", "out", "-d", "600"]
    assert parser.parse_args(base + ["--disable_tta"]).disable_tta
    assert parser.parse_args(base + ["--disable-tta"]).disable_tta  # the old spelling still works
    assert not parser.parse_args(base).disable_tta
    predict_tasks = parser._subparsers._group_actions[0].choices["predict-tasks"]
    assert "--disable_tta, --disable-tta" in predict_tasks.format_help()  # nnU-Net's spelling first


# ---------------------------------------------------------------------------------------------------- export


def _custom_trainer_zip(tmp_path: Path, monkeypatch) -> Path:
    """A model zip of a trainer whose code lives outside nnU-Net and this package."""
    from nnunet_transfer.inference.export import export_model

    ext = tmp_path / "my_trainers"
    ext.mkdir()
    (ext / "tiny_custom_trainer.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n"
        "class TinyCustomTrainerXYZ(nnUNetTrainer):\n    pass\n")
    monkeypatch.setenv(EXT_TRAINER_VARIABLE, str(ext))
    tiny._write_tiny_model(tmp_path / "results", folds=(0,), trainer="TinyCustomTrainerXYZ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zip_path = export_model(DATASET, [tiny.CONFIG], "TinyCustomTrainerXYZ", folds=[0],
                                output_zip=tmp_path / "m.zip", results_dir=tmp_path / "results")
    monkeypatch.delenv(EXT_TRAINER_VARIABLE)
    return zip_path


def test_predict_export_checks_the_trainer_before_installing(tmp_path, monkeypatch):
    from nnunet_transfer.inference.export import TrainerNotFoundError, install_and_predict

    zip_path = _custom_trainer_zip(tmp_path, monkeypatch)
    tiny._write_inputs(tmp_path / "in")
    with pytest.raises(TrainerNotFoundError, match="nothing was installed"):
        install_and_predict(zip_path, tmp_path / "in", tmp_path / "pred", workspace=tmp_path / "ws")
    results = tmp_path / "ws" / "nnUNet_results"
    assert not results.exists() or not any(results.rglob("*.pth"))


def test_export_warnings_print_as_one_line_notes(tmp_path, monkeypatch, capsys):
    ext = tmp_path / "my_trainers"
    ext.mkdir()
    (ext / "tiny_custom_trainer.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n"
        "class TinyCustomTrainerXYZ(nnUNetTrainer):\n    pass\n")
    monkeypatch.setenv(EXT_TRAINER_VARIABLE, str(ext))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    tiny._write_tiny_model(tmp_path / "results", folds=(0,), trainer="TinyCustomTrainerXYZ")
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as on the command line
        assert main(["export", "-d", DATASET, "-tr", "TinyCustomTrainerXYZ", "-f", "0",
                     "-o", str(tmp_path / "m.zip")]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "ship it separately" in line]
    assert notes and all(line.startswith("note: ") for line in notes), err
    assert "UserWarning" not in err and "warnings.warn(" not in err


def test_readme_of_an_export_says_where_the_model_is_installed(tmp_path):
    from nnunet_transfer.inference.export import README_NAME, export_model

    tiny._write_tiny_model(tmp_path / "results", folds=(0,))
    zip_path = export_model(DATASET, [tiny.CONFIG], tiny.TRAINER, folds=[0], output_zip=tmp_path / "m.zip",
                            results_dir=tmp_path / "results")
    with zipfile.ZipFile(zip_path) as zf:
        readme = zf.read(README_NAME).decode()
    assert "installs into a temporary nnUNet_results" not in readme
    assert "$nnUNet_results when it is set" in readme and "postprocessing" in readme


def _pp_json(folder: Path) -> None:
    """postprocessing.json and .pkl as nnUNetv2_find_best_configuration writes them (largest component of label 1)."""
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation

    folder.mkdir(parents=True)
    fns, kwargs = [remove_all_but_largest_component_from_segmentation], [{"labels_or_regions": 1}]
    (folder / "postprocessing.pkl").write_bytes(pickle.dumps((fns, kwargs)))
    (folder / "postprocessing.json").write_text(json.dumps({
        "input_folder": {}, "postprocessed": {}, "postprocessing_fns": [f.__name__ for f in fns],
        "postprocessing_kwargs": kwargs}))


def test_predict_export_applies_the_models_postprocessing_from_its_json(tmp_path, monkeypatch, capsys):
    from nnunet_transfer.inference.export import export_model, install_and_predict

    model_dir = tiny._write_tiny_model(tmp_path / "results", folds=(0,))
    _pp_json(model_dir / "crossval_results_folds_0")
    zip_path = export_model(DATASET, [tiny.CONFIG], tiny.TRAINER, folds=[0], output_zip=tmp_path / "m.zip",
                            results_dir=tmp_path / "results")
    with zipfile.ZipFile(zip_path) as zf:
        assert any(n.endswith("crossval_results_folds_0/postprocessing.pkl") for n in zf.namelist())
    tiny._write_inputs(tmp_path / "in")
    monkeypatch.delenv("nnUNet_results", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = install_and_predict(zip_path, tmp_path / "in", tmp_path / "pred", workspace=tmp_path / "ws",
                                  num_processes=0, use_mirroring=False)
    assert any("postprocessing.json" in str(w.message) for w in caught)  # the pickle is left out, and said so
    assert "applied the model's postprocessing (1 step(s)" in capsys.readouterr().out
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation

    for path in out.glob("*.nii.gz"):  # applied: applying it again changes nothing
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert np.array_equal(remove_all_but_largest_component_from_segmentation(seg, 1), seg)


def test_postprocessing_json_names_only_nnunets_functions(tmp_path):
    from nnunet_transfer.errors import NnUNetTransferError
    from nnunet_transfer.inference.postprocessing import read_postprocessing

    path = tmp_path / "postprocessing.json"
    path.write_text(json.dumps({"postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"],
                                "postprocessing_kwargs": [{"labels_or_regions": [[1, 2], [2]]}]}))
    fns, kwargs = read_postprocessing(path)
    assert fns[0].__module__.startswith("nnunetv2.") and kwargs == [{"labels_or_regions": [(1, 2), (2,)]}]
    path.write_text(json.dumps({"postprocessing_fns": ["system"], "postprocessing_kwargs": [{}]}))
    with pytest.raises(NnUNetTransferError, match="cannot be applied"):
        read_postprocessing(path)
    assert read_postprocessing(tmp_path / "absent.json") is None


# ---------------------------------------------------------------------------------------------------- workspace


def test_trainer_variant_source_is_a_complete_module():
    from nnunet_transfer.workspace import trainer_variant_source

    source = trainer_variant_source("KiTS21HECTrainer_check", "KiTS21HECTrainer", seed=3)
    namespace: dict = {}
    exec(compile(source, "variant.py", "exec"), namespace)  # on its own: no import supplied by the caller
    assert namespace["KiTS21HECTrainer_check"].__init__.__defaults__[0] == torch.device("cuda")


def test_workspace_command_timeout_stops_the_command(tmp_path):
    from nnunet_transfer.workspace import CommandFailed, NnUNetWorkspace

    ws = NnUNetWorkspace(tmp_path / "ws")
    started = time.time()
    with pytest.raises(CommandFailed, match="longer than 1 s"):
        ws.run([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(20)"], timeout=1)
    assert time.time() - started < 10


# ---------------------------------------------------------------------------------------------------- dead code, words


def test_removed_dead_code_stays_removed():
    from nnunet_transfer.cli import data as data_cli
    from nnunet_transfer.data import synthetic
    from nnunet_transfer.evaluation import kits

    assert not hasattr(synthetic, "GENERATORS")
    assert not hasattr(kits, "evaluate_case_files")
    assert '"kits")' not in inspect.getsource(data_cli._cmd_convert)  # convert's choices have no "kits"


REPO = Path(__file__).resolve().parents[1]
#: phrases about how and where the product was made, not about the product
WORKSHOP_PHRASES = ("test environment", "lent gpu", "lent h200", "lent device", "was lent", "session was started",
                    "carry list", "heavy.lock", "/work/.library", "file-transfer")


def test_product_files_speak_of_the_product():
    files = [REPO / "README.md", *(REPO / "nnunet_transfer").rglob("*.py"), *(REPO / "docs").glob("*.md"),
             *(REPO / "scripts").glob("*")]
    files += [p for p in (REPO / "benchmarks").iterdir() if p.suffix in (".py", ".sh", ".md")]
    found = [f"{path.relative_to(REPO)}: {phrase!r}" for path in files if path.is_file()
             for phrase in WORKSHOP_PHRASES if phrase in path.read_text(errors="replace").lower()]
    assert not found, found
