"""Untrusted files never run: booby-trapped checkpoints (payload = create a marker file) are refused by every
trainer we ship, however ``-pretrained_weights`` is spelled, and by every command that reads a checkpoint; damaged
checkpoints are refused naming the file. The marker must never appear."""

from __future__ import annotations

import ast
import inspect
import os
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import nnunet_transfer.trainers as trainers
from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.pretrained.safe_load import (CheckpointFormatError, UnreadableCheckpointError,
                                                  UnsafeCheckpointError, read_checkpoint_file)
from nnunet_transfer.transfer.loading import load_matching
from nnunet_transfer.trainers.guarded import GuardedTrainer, check_command_line_pretrained_weights
from nnunet_transfer.trainers.nnunet_invocation import (NNUNET_TRAIN_ARGUMENTS, nnunet_train_parser,
                                                         pretrained_weights_argument)
from support.booby_trap import Payload


def booby_trapped_checkpoints(folder: Path, marker: Path) -> dict:
    """One booby-trapped file per checkpoint format we read: nnU-Net's zip, legacy pickle, misnamed .safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {"encoder.w": torch.zeros(2)}
    files = {}
    files["nnunet_zip"] = folder / "checkpoint_final.pth"
    torch.save({"network_weights": weights, "init_args": {}, "trainer_name": "x", "hook": Payload(marker)},
               files["nnunet_zip"])
    files["legacy_pickle"] = folder / "legacy.pth"
    torch.save({"state_dict": weights, "hook": Payload(marker)}, files["legacy_pickle"],
               _use_new_zipfile_serialization=False)
    files["raw_pickle"] = folder / "raw.model"
    files["raw_pickle"].write_bytes(pickle.dumps({"state_dict": weights, "hook": Payload(marker)}))
    # nnU-Net's loader torch.loads whatever the suffix: a pickle named .safetensors must not pass either
    files["misnamed_safetensors"] = folder / "weights.safetensors"
    files["misnamed_safetensors"].write_bytes(files["raw_pickle"].read_bytes())
    return files


@pytest.fixture
def trap(tmp_path):
    marker = tmp_path / "payload_ran"
    files = booby_trapped_checkpoints(tmp_path / "evil", marker)
    yield files, marker
    assert not marker.exists(), "a booby-trapped checkpoint ran its code"


# ---------------------------------------------------------------------------------------------- nnU-Net's parser

def nnunet_parser_definition() -> list:
    """``(flags, keywords)`` of every ``add_argument`` in nnU-Net's ``run_training_entry``, read from its source."""
    from nnunetv2.run import run_training

    tree = ast.parse(inspect.getsource(run_training.run_training_entry))
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags = tuple(ast.literal_eval(a) for a in node.args)
            keywords = {}
            for kw in node.keywords:
                if kw.arg == "help":
                    continue
                value = kw.value
                keywords[kw.arg] = {"str": str, "int": int}[value.id] if isinstance(value, ast.Name) else \
                    ast.literal_eval(value)
            calls.append((flags, keywords))
    return sorted(calls, key=lambda c: c[0])


def test_our_copy_of_nnunets_train_parser_matches_its_source():
    assert sorted(NNUNET_TRAIN_ARGUMENTS, key=lambda c: c[0]) == nnunet_parser_definition()


BASE = ["nnUNetv2_train", "601", "3d_fullres", "0"]
SPELLINGS = [
    ["-pretrained_weights", "EVIL"],
    ["-pretrained_weights=EVIL"],
    ["-pretrained_weight", "EVIL"],  # abbreviations argparse accepts
    ["-pretrained_w=EVIL"],
    ["-pretrained_weights", "SAFE", "-pretrained_weights", "EVIL"],  # the last one wins
    ["-pretrained_weights=SAFE", "-pretrained_weights", "EVIL"],
    ["-tr", "KiTS21HECTrainer", "-pretrained_weights", "EVIL", "-device", "cpu"],
    ["-pretrained", "EVIL"],  # ambiguous with -p: argparse refuses, nnU-Net never loads
    ["-pretrained_weightsEVIL"],
    ["--", "-pretrained_weights", "EVIL"],
    ["-pretrained_weights", "EVIL", "--c"],
    ["-h", "-pretrained_weights", "EVIL"],
    [],
]


@pytest.mark.parametrize("extra", SPELLINGS, ids=lambda e: " ".join(e) or "none")
@pytest.mark.parametrize("position", ["after", "before"])
def test_pretrained_weights_is_read_exactly_as_nnunets_parser_reads_it(extra, position):
    reference = nnunet_train_parser([(flags, kw) for flags, kw in nnunet_parser_definition()])
    argv = BASE + extra if position == "after" else BASE[:1] + extra + BASE[1:]
    try:
        expected = reference.parse_args(argv[1:]).pretrained_weights
    except Exception:  # nnU-Net's parser refuses the command line: its loader never runs
        expected = None
    assert pretrained_weights_argument(argv) == expected
    if any("EVIL" in e for e in extra) and expected is not None:
        assert expected == "EVIL"


def test_spellings_that_reach_nnunets_loader_are_refused(trap, tmp_path):
    files, _ = trap
    reached = 0
    for extra in SPELLINGS:
        argv = [a.replace("EVIL", str(files["nnunet_zip"])) for a in BASE + extra]
        if pretrained_weights_argument(argv) is None:
            continue
        reached += 1
        safe = tmp_path / "SAFE"
        torch.save({"network_weights": {}}, safe)
        argv = [a.replace("SAFE", str(safe)) for a in argv]
        with pytest.raises(UnsafeCheckpointError, match="pickled Python objects"):
            check_command_line_pretrained_weights(argv)
    assert reached >= 6


# ---------------------------------------------------------------------------------------------- every trainer

def test_every_trainer_we_ship_is_guarded():
    for name in trainers.__all__:
        assert issubclass(getattr(trainers, name), GuardedTrainer), name


@pytest.mark.parametrize("name", trainers.__all__)
@pytest.mark.parametrize("fmt", ["nnunet_zip", "legacy_pickle", "raw_pickle", "misnamed_safetensors"])
def test_every_trainer_refuses_a_booby_trapped_pretrained_weights_file(name, fmt, trap, monkeypatch):
    files, _ = trap
    monkeypatch.setattr(sys, "argv", BASE + ["-tr", name, f"-pretrained_weights={files[fmt]}"])
    with pytest.raises(NnUNetTransferError, match=str(files[fmt].name)):
        getattr(trainers, name)(plans={}, configuration="3d_fullres", fold=0, dataset_json={},
                                device=torch.device("cpu"))


# ---------------------------------------------------------------------------------------------- damaged files

def damaged_checkpoints(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.pth"
    torch.save({"state_dict": {"w": torch.zeros(100)}}, good)
    files = {"empty": b"", "text": b"hello, this is not a checkpoint\n", "random": os.urandom(4096),
             "truncated": good.read_bytes()[: good.stat().st_size // 2]}
    out = {}
    for name, data in files.items():
        out[name] = folder / f"{name}.pth"
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize("kind", ["empty", "text", "random", "truncated"])
def test_damaged_checkpoints_are_refused_naming_the_file_not_called_code(kind, tmp_path):
    path = damaged_checkpoints(tmp_path)[kind]
    with pytest.raises(UnreadableCheckpointError) as info:
        read_checkpoint_file(path)
    assert str(path) in str(info.value) and "arbitrary code" not in str(info.value)
    assert info.value.file == path


def test_a_deflate_bomb_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "bomb.pth"
    torch.save({"state_dict": {"w": torch.zeros(4_000_000)}}, path)  # 16 MB of zeros
    recompressed = tmp_path / "bomb_deflated.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(recompressed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert recompressed.stat().st_size < 1_000_000
    with pytest.raises(UnreadableCheckpointError, match="decompresses to"):
        read_checkpoint_file(recompressed)
    assert read_checkpoint_file(recompressed, max_bytes=32_000_000)["state_dict"]["w"].numel() == 4_000_000


@pytest.mark.parametrize("value, message", [
    (torch.ones(3, dtype=torch.int64), "int64"),
    (torch.ones(3, dtype=torch.bool), "bool"),
    (torch.tensor([1.0, float("nan"), 0.0]), "NaN"),
    (torch.tensor([1.0, float("inf"), 0.0]), "NaN or infinite"),
])
def test_weights_of_the_wrong_kind_are_refused_naming_the_tensor(value, message, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"weight": value}, str(path))
    module = torch.nn.Linear(1, 3, bias=False)
    module.weight.data = torch.zeros(3)
    with pytest.raises(CheckpointFormatError, match=f"'weight'.*{message}|{message}.*'weight'"):
        load_matching(module, read_checkpoint_file(path), source=str(path))


def test_float16_weights_are_cast_with_a_warning(tmp_path):
    module = torch.nn.Linear(3, 1, bias=False)
    with pytest.warns(UserWarning, match="float16, cast to the network's torch.float32"):
        report = load_matching(module, {"weight": torch.ones(1, 3, dtype=torch.float16)}, source="f16")
    assert report.loaded == ["weight"] and module.weight.dtype == torch.float32


def test_a_damaged_safetensors_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(UnreadableCheckpointError, match=str(path)):
        read_checkpoint_file(path)


@pytest.mark.parametrize("fmt", ["nnunet_zip", "legacy_pickle", "raw_pickle", "misnamed_safetensors"])
def test_every_reader_of_checkpoints_refuses_a_booby_trapped_file(fmt, trap, capsys):
    from nnunet_transfer.cli.main import main
    from nnunet_transfer.transfer.verify import verify_checkpoint
    from nnunet_transfer.transfer.weights import nnunet_pretrained_weights_report, transfer_weights

    files, _ = trap
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3))
    for read in (lambda p: transfer_weights(network, p), lambda p: nnunet_pretrained_weights_report(network, p)):
        with pytest.raises(NnUNetTransferError, match=files[fmt].name):
            read(files[fmt])
    assert not verify_checkpoint(files[fmt]).ok
    assert main(["verify-weights", str(files[fmt])]) == 1
