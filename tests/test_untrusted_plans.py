"""plans.json from elsewhere is data, never code; model files are read once, bounded, and every member is checked.

The attacks (issue: untrusted models, round 2) each come with a proof that the trap is real (nnU-Net's own
``get_network_from_plans`` runs it) and a test that our commands refuse it with one line naming the file and field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.inference.export import MANIFEST_NAME, ChecksumMismatchError, export_model, install_and_predict, \
    install_model
from nnunet_transfer.pretrained.plans_check import ForeignPlansError, check_foreign_plans, read_foreign_plans
from nnunet_transfer.pretrained.safe_load import UnsafeCheckpointError
from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.utils.bounded_io import InputTooLargeError

from support.booby_trap import Payload
from test_export import CONFIG, DATASET, MODEL_REL, TRAINER, _write_inputs, _write_tiny_model, tiny_plans

PLANS = f"{MODEL_REL}/plans.json"
CKPT = f"{MODEL_REL}/fold_0/checkpoint_final.pth"


def _arch(plans: dict) -> dict:
    return plans["configurations"][CONFIG]["architecture"]


def os_system_plans(marker: Path) -> dict:
    plans = tiny_plans()
    _arch(plans)["arch_kwargs"].update(nonlin="os.system", nonlin_kwargs={"command": f"mkdir {marker}"})
    return plans


def logging_plans(victim: Path) -> dict:
    plans = tiny_plans()
    _arch(plans)["arch_kwargs"].update(nonlin="logging.basicConfig",
                                       nonlin_kwargs={"filename": str(victim), "filemode": "w", "force": True})
    return plans


def hub_plans(repo: Path) -> dict:
    plans = tiny_plans()
    _arch(plans)["network_class_name"] = "torch.hub.load"
    _arch(plans)["arch_kwargs"] = {"repo_or_dir": str(repo), "model": "entry", "source": "local",
                                   "trust_repo": True}
    _arch(plans)["_kw_requires_import"] = []
    return plans


HUBCONF = "import os\n\ndef entry(**kwargs):\n    os.mkdir({marker!r})\n    raise SystemExit(0)\n"


def _build_like_nnunet(plans: dict) -> None:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = _arch(plans)
    get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 4,
                           deep_supervision=False)


# ---------------------------------------------------------------------------------------------- the allow-list

def test_plans_nnunet_and_we_write_pass():
    assert check_foreign_plans(tiny_plans(), "plans.json") == tiny_plans()
    ours = tiny_plans()
    _arch(ours)["network_class_name"] = "nnunet_transfer.architectures.attention_unet.AttentionUNet"
    _arch(ours)["arch_kwargs"]["decoder_norm_op"] = "torch.nn.modules.batchnorm.BatchNorm3d"
    _arch(ours)["_kw_requires_import"].append("decoder_norm_op")
    check_foreign_plans(ours, "plans.json")
    short = tiny_plans()  # old plans name the class alone; nnU-Net finds it in dynamic-network-architectures
    _arch(short)["network_class_name"] = "PlainConvUNet"
    check_foreign_plans(short, "plans.json")


def test_the_os_system_trap_is_real_and_refused(tmp_path):
    marker = tmp_path / "payload_ran"
    with contextlib.suppress(Exception):  # whether the build fails afterwards does not matter
        _build_like_nnunet(os_system_plans(marker))
    assert marker.exists()  # nnU-Net's own builder runs the plans' command
    marker.rmdir()
    with pytest.raises(ForeignPlansError, match=r"plans.json: configurations.3d_fullres.architecture.arch_kwargs"
                                                r".nonlin = 'os.system'"):
        check_foreign_plans(os_system_plans(marker), "plans.json")
    assert not marker.exists()


def test_the_logging_trap_is_real_and_refused(tmp_path, monkeypatch):
    import logging

    victim = tmp_path / "results.csv"
    victim.write_text("precious\n")
    monkeypatch.setattr(logging.root, "handlers", [])
    with contextlib.suppress(Exception):
        _build_like_nnunet(logging_plans(victim))
    for handler in logging.root.handlers:
        handler.close()
    assert victim.read_text() == ""  # emptied by nnU-Net's builder
    victim.write_text("precious\n")
    with pytest.raises(ForeignPlansError, match="logging.basicConfig"):
        check_foreign_plans(logging_plans(victim), "plans.json")
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("field, value, message", [
    ("network_class_name", "torch.hub.load", "only classes of"),
    ("network_class_name", "nnunetv2.paths.os.system", "does not name a network"),
    ("network_class_name", "os", "not a class nnU-Net can build"),
    ("network_class_name", "nnunetv2.run.run_training.nnUNetTrainer", "does not name a network"),
    ("conv_op", "torch.nn.modules.container.Sequential", "only torch.nn convolution"),
    ("conv_op", "torch.nn.modules.conv.os.system", "does not name a network"),
    ("conv_op", "builtins.eval", "only classes of"),
    ("features_per_stage", [4, 8, 10 ** 9], "numbers here are finite and at most"),
    ("strides", [[1, 1, 1], [2, -2, 2], [2, 2, 2]], r"strides\[1\]\[1\] = -2"),
    ("kernel_sizes", [[3, 3, 3], [3, 3]], "one entry per axis|list of 3"),
    ("n_stages", 10 ** 9, "n_stages"),
])
def test_names_and_values_outside_the_allow_list_are_refused(field, value, message):
    plans = tiny_plans()
    if field == "network_class_name":
        _arch(plans)[field] = value
    else:
        _arch(plans)["arch_kwargs"][field] = value
    with pytest.raises(ForeignPlansError, match=message) as info:
        check_foreign_plans(plans, "m/plans.json")
    assert str(info.value).startswith("refused m/plans.json: configurations.3d_fullres.architecture")
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("where, key, value", [
    ("configuration", "patch_size", [8, 16, 10 ** 6]),
    ("configuration", "spacing", [2.0, -1.0, 1.0]),
    ("configuration", "batch_size", 0),
    ("configuration", "preprocessor_name", "os.system"),
    ("configuration", "normalization_schemes", ["../../evil"]),
    ("configuration", "inherits_from", "3d_fullres"),  # a configuration inheriting from itself
    ("plans", "label_manager", "subprocess.Popen"),
    ("plans", "transpose_forward", [0, 0, 5]),
])
def test_other_plans_fields_are_checked(where, key, value):
    plans = tiny_plans()
    (plans if where == "plans" else plans["configurations"][CONFIG])[key] = value
    with pytest.raises(ForeignPlansError, match=key):
        check_foreign_plans(plans, "plans.json")


def test_a_trusted_name_is_allowed_only_when_named_exactly():
    plans = tiny_plans()
    _arch(plans)["arch_kwargs"]["nonlin"] = "mypackage.blocks.Swish"
    with pytest.raises(ForeignPlansError, match="--trust-architecture mypackage.blocks.Swish"):
        check_foreign_plans(plans, "plans.json")
    check_foreign_plans(plans, "plans.json", trusted=["mypackage.blocks.Swish"])


def test_a_huge_plans_json_is_refused_before_parsing(tmp_path):
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(tiny_plans()) + " " * (17 << 20))
    with pytest.raises(InputTooLargeError, match="plans.json"):
        read_foreign_plans(path)


# ---------------------------------------------------------------------------------------------- predict-export

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("plans_export")
    _write_tiny_model(root / "results", folds=(0,))
    return export_model(DATASET, [CONFIG], TRAINER, folds=(0,), output_zip=root / "model.zip",
                        results_dir=root / "results")


def rewrite(src: Path, dst: Path, replace: dict, listed_as_checkpoint: bool = False) -> Path:
    """A copy of the zip with members replaced or added and every checksum of the manifest made to match, as an
    attacker who edits the zip would do."""
    with zipfile.ZipFile(src) as zin:
        members = {i.filename: zin.read(i.filename) for i in zin.infolist()}
    members.update(replace)
    manifest = json.loads(members[MANIFEST_NAME])
    for name, data in replace.items():
        manifest["members_sha256"][name] = hashlib.sha256(data).hexdigest()
        if listed_as_checkpoint or name in manifest["checkpoint_sha256"]:
            manifest["checkpoint_sha256"][name] = hashlib.sha256(data).hexdigest()
    members[MANIFEST_NAME] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in members.items():
            zout.writestr(name, data)
    return dst


def _predict(zip_path: Path, tmp_path: Path, **kwargs) -> Path:
    if not (tmp_path / "in").exists():
        _write_inputs(tmp_path / "in")
    return install_and_predict(zip_path, tmp_path / "in", tmp_path / "pred", workspace=tmp_path / "ws",
                               num_processes=0, **kwargs)


def _nothing_installed(tmp_path: Path) -> bool:
    results = tmp_path / "ws" / "nnUNet_results"
    return not results.exists() or list(results.iterdir()) == []


def test_predict_export_refuses_plans_that_run_a_command(exported, tmp_path):
    marker = tmp_path / "payload_ran"
    evil = rewrite(exported, tmp_path / "evil.zip", {PLANS: json.dumps(os_system_plans(marker)).encode()})
    with pytest.raises(ForeignPlansError, match=r"evil.zip:.*plans.json: .*nonlin = 'os.system'"):
        _predict(evil, tmp_path)
    assert not marker.exists() and _nothing_installed(tmp_path) and not (tmp_path / "pred").exists()


def test_predict_export_refuses_logging_plans_and_keeps_the_file(exported, tmp_path, monkeypatch):
    victim = tmp_path / "notes.txt"
    victim.write_text("precious\n")
    monkeypatch.chdir(tmp_path)
    evil = rewrite(exported, tmp_path / "evil.zip", {PLANS: json.dumps(logging_plans(victim)).encode()})
    with pytest.raises(ForeignPlansError, match="logging.basicConfig"):
        _predict(evil, tmp_path)
    assert victim.read_text() == "precious\n"


def test_predict_export_refuses_torch_hub_with_a_shipped_hubconf(exported, tmp_path):
    marker = tmp_path / "payload_ran"
    repo = (tmp_path / "ws" / "nnUNet_results" / MODEL_REL).resolve()
    hubconf = {f"{MODEL_REL}/hubconf.py": HUBCONF.format(marker=str(marker)).encode()}
    evil = rewrite(exported, tmp_path / "evil.zip", {PLANS: json.dumps(hub_plans(repo)).encode(), **hubconf})
    with pytest.raises(ForeignPlansError, match="network_class_name = 'torch.hub.load'"):
        _predict(evil, tmp_path)
    code_only = rewrite(exported, tmp_path / "evil2.zip", hubconf)
    with pytest.raises(NnUNetTransferError, match="hubconf.py.*is code"):
        _predict(code_only, tmp_path)
    assert not marker.exists() and _nothing_installed(tmp_path)


def test_trust_architecture_lets_a_named_class_through(exported, tmp_path):
    plans = tiny_plans()
    _arch(plans)["arch_kwargs"]["nonlin"] = "torch.nn.LeakyReLU"  # allowed anyway: the option does not widen others
    edited = rewrite(exported, tmp_path / "ok.zip", {PLANS: json.dumps(plans).encode()})
    out = _predict(edited, tmp_path, trusted=["mypackage.Net"])
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case0.nii.gz", "case1.nii.gz"]


def test_every_member_is_hashed_and_checked(exported, tmp_path):
    with zipfile.ZipFile(exported) as zf:
        manifest = json.loads(zf.read(MANIFEST_NAME))
        names = {n for n in zf.namelist() if not n.endswith("/")} - {MANIFEST_NAME}
    assert set(manifest["members_sha256"]) == names
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(exported) as zin, zipfile.ZipFile(tampered, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info, data.replace(b'"batch_size": 2', b'"batch_size": 3') if info.filename == PLANS
                          else data)
    with pytest.raises(ChecksumMismatchError, match="plans.json"):
        install_model(tampered, tmp_path / "results")
    assert list((tmp_path / "results").iterdir()) == []


@pytest.mark.parametrize("name", [f"{MODEL_REL}/fold_0/CHECKPOINT_FINAL.PTH",
                                  f"{MODEL_REL}/fold_0/checkpoint_final.pth.bak"])
@pytest.mark.parametrize("listed", [False, True])
def test_checkpoint_members_of_any_spelling_are_checked(exported, tmp_path, name, listed):
    marker = tmp_path / "payload_ran"
    trap = tmp_path / "trap.pth"
    torch.save({"network_weights": {}, "hook": Payload(marker)}, trap)
    evil = rewrite(exported, tmp_path / "evil.zip", {name: trap.read_bytes()}, listed_as_checkpoint=listed)
    with pytest.raises(UnsafeCheckpointError, match="not listed" if not listed else "pickled Python objects"):
        install_model(evil, tmp_path / "results")
    assert list((tmp_path / "results").iterdir()) == [] and not marker.exists()


def test_zip_members_are_bounded_before_inflating(exported, tmp_path):
    with pytest.raises(InputTooLargeError, match="checkpoint_final.pth: it inflates to"):
        install_model(exported, tmp_path / "results", max_member_bytes=1000)
    big = rewrite(exported, tmp_path / "big.zip", {PLANS: json.dumps(tiny_plans()).encode() + b" " * (17 << 20)})
    assert big.stat().st_size < 2 << 20  # compresses to nearly nothing: declared sizes must be checked
    with pytest.raises(InputTooLargeError, match="plans.json"):
        install_model(big, tmp_path / "results")
    assert list((tmp_path / "results").iterdir()) == []


# ---------------------------------------------------------------------------------------------- results folders

def test_results_folder_plans_are_checked_when_read_as_weights(tmp_path):
    model_dir = _write_tiny_model(tmp_path / "results", folds=(0,))
    assert read_source_weights(model_dir).format == "nnunet_v2"
    (model_dir / "plans.json").write_text(json.dumps(os_system_plans(tmp_path / "m")))
    with pytest.raises(ForeignPlansError, match=f"refused {model_dir / 'plans.json'}: .*nonlin"):
        read_source_weights(model_dir)


def test_predict_tasks_reads_results_folders_as_data(tmp_path, monkeypatch):
    from nnunet_transfer.inference.predict_tasks import predict_tasks

    results = tmp_path / "results"
    model_dir = _write_tiny_model(results, folds=(0,))
    monkeypatch.setenv("nnUNet_results", str(results))
    marker = tmp_path / "payload_ran"
    (model_dir / "plans.json").write_text(json.dumps(os_system_plans(marker)))
    _write_inputs(tmp_path / "in")
    args = (tmp_path / "in", tmp_path / "out", DATASET, CONFIG, TRAINER, [0])
    with pytest.raises(ForeignPlansError, match="os.system"):
        predict_tasks(*args, device="cpu")
    (model_dir / "plans.json").write_text(json.dumps(tiny_plans()))
    checkpoint = model_dir / "fold_0" / "checkpoint_final.pth"
    content = torch.load(checkpoint, weights_only=False)
    content["hook"] = Payload(marker)
    torch.save(content, checkpoint)
    with pytest.raises(UnsafeCheckpointError, match="checkpoint_final.pth"):
        predict_tasks(*args, device="cpu")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- read once

_READ_ONCE = textwrap.dedent("""
    import sys
    import torch
    from nnunet_transfer.trainers.guarded import check_pretrained_weights_file
    from nnunet_transfer.transfer.weights import nnunet_pretrained_weights_report
    path, opened = sys.argv[1], []
    sys.addaudithook(lambda event, args: opened.append(1) if event == "open" and str(args[0]) == path else None)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3))
    source = check_pretrained_weights_file(path)
    nnunet_pretrained_weights_report(net, source)
    print(len(opened), source.sha256)
""")


def test_a_pretrained_weights_file_is_opened_once_for_check_hash_and_report(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"network_weights": torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3)).state_dict()}, path)
    done = subprocess.run([sys.executable, "-c", _READ_ONCE, str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    opens, digest = done.stdout.split()
    assert opens == "1" and digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_swapped_after_the_check_is_never_unpickled_by_nnunet(tmp_path, monkeypatch):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    import nnunet_transfer.trainers as trainers

    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)  # restored after the test
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3))
    path = tmp_path / "weights.pth"
    torch.save({"network_weights": net.state_dict()}, path)
    monkeypatch.setattr(sys, "argv", ["nnUNetv2_train", "1", "3d_fullres", "0", "-pretrained_weights", str(path)])
    with pytest.raises(Exception):  # checked and kept; the empty plans stop nnU-Net's constructor afterwards
        trainers.FineTuneTrainer(plans={}, configuration="3d_fullres", fold=0, dataset_json={},
                                 device=torch.device("cpu"))
    marker = tmp_path / "payload_ran"
    torch.save({"network_weights": net.state_dict(), "hook": Payload(marker)}, path)  # swapped after the check
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        load_pretrained_weights(net, str(path))  # nnU-Net's own loader, as run_training calls it
    assert not marker.exists()


def test_resuming_reads_the_fold_checkpoint_as_data(tmp_path):
    """``nnUNetv2_train ... --c`` with our trainers: nnU-Net's ``load_checkpoint`` hook reads with ``weights_only``."""
    from nnunet_transfer.trainers.guarded import GuardedTrainer

    trainer = object.__new__(GuardedTrainer)  # the hook needs no more of the trainer before the file is read
    trainer.was_initialized, trainer.device = True, torch.device("cpu")
    marker = tmp_path / "payload_ran"
    latest = tmp_path / "checkpoint_latest.pth"
    torch.save({"network_weights": {}, "logging": {"ema_fg_dice": [np.float64(0.5)]}, "hook": Payload(marker)},
               latest)
    with pytest.raises(UnsafeCheckpointError, match="checkpoint_latest.pth"):
        trainer.load_checkpoint(str(latest))
    assert not marker.exists()
    torch.save({"network_weights": {}, "logging": {"ema_fg_dice": [np.float64(0.5)]}}, latest)
    with pytest.raises(KeyError, match="init_args"):  # read (numpy numbers allowed); then it wants the rest
        trainer.load_checkpoint(str(latest))


def test_nnssl_adaptation_plans_are_checked(tmp_path):
    from support.nnunet_family import resenc_unet, write_nnssl_checkpoint

    path = write_nnssl_checkpoint(tmp_path / "nnssl.pth", resenc_unet())
    assert read_source_weights(path).format == "nnssl"
    content = torch.load(path, weights_only=False)
    content["nnssl_adaptation_plan"]["architecture_plans"]["arch_kwargs"]["nonlin"] = "os.system"
    torch.save(content, path)
    with pytest.raises(ForeignPlansError, match="nnssl_adaptation_plan.architecture_plans.arch_kwargs.nonlin"):
        read_source_weights(path)


def test_results_zip_members_are_bounded(tmp_path):
    from support.nnunet_family import zip_results_folder

    results = tmp_path / "results"
    model_dir = _write_tiny_model(results, folds=(0,))
    archive = zip_results_folder(results, model_dir, tmp_path / "model.zip")
    with pytest.raises(InputTooLargeError, match="checkpoint_final.pth: it inflates to"):
        read_source_weights(archive, max_member_bytes=1000)
    assert read_source_weights(archive).format == "nnunet_v2"
