"""nnU-Net finds our trainers through nnUNet_extTrainer, as the very classes of nnunet_transfer.trainers."""

from __future__ import annotations

import os
import subprocess
import sys

from nnunet_transfer.cli.main import main
from nnunet_transfer.discovery import ext_trainer_dir, ext_trainer_value

ENV_WITHOUT_NNUNET = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "nnunet_transfer.cli.main", *args], env=env, capture_output=True,
                          text=True)


def test_env_line_appends_once_and_keeps_existing_value():
    line = _cli("env", env=ENV_WITHOUT_NNUNET).stdout
    script = f'export nnUNet_extTrainer=/my/trainers\n{line}\n{line}\necho "$nnUNet_extTrainer"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=ENV_WITHOUT_NNUNET)
    assert out.stdout.strip() == f"/my/trainers{os.pathsep}{ext_trainer_dir()}"


def test_env_workspace_sets_only_unset_paths(tmp_path):
    line = _cli("env", "--workspace", str(tmp_path), env=ENV_WITHOUT_NNUNET).stdout
    script = f'export nnUNet_results=/keep\n{line}\necho "$nnUNet_raw|$nnUNet_results"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=ENV_WITHOUT_NNUNET)
    assert out.stdout.strip() == f"{tmp_path.resolve() / 'nnUNet_raw'}|/keep"


def test_nnunet_lookup_returns_our_class_objects():
    probe = (
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
        "import nnunet_transfer.trainers as ours\n"
        "for name in ours.__all__:\n"
        "    assert find(name) is getattr(ours, name), name\n"
        "print('all found')\n"
    )
    env = dict(ENV_WITHOUT_NNUNET, nnUNet_extTrainer=ext_trainer_value(None))
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "all found" in out.stdout


def test_doctor_explains_what_to_fix_and_passes_when_set_up(tmp_path, monkeypatch, capsys):
    # the CLI's entry point in this process (a subprocess each would import torch twice more); the doctor still runs
    # nnU-Net's trainer lookup in a fresh process, with this environment, as it does for a user
    for var in [k for k in os.environ if k.startswith("nnUNet_")]:
        monkeypatch.delenv(var)
    assert main(["doctor"]) == 1
    bad = capsys.readouterr().out
    assert "[FIX] nnUNet_raw is not set" in bad and 'eval "$(nnunet-transfer env)"' in bad
    monkeypatch.setenv("nnUNet_extTrainer", ext_trainer_value(None))
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    code = main(["doctor"])
    good = capsys.readouterr()
    assert code == 0, good.out + good.err
    assert "nnU-Net finds our trainers" in good.out


def test_cli_reports_user_errors_without_traceback(tmp_path):
    env = dict(ENV_WITHOUT_NNUNET, nnUNet_raw=str(tmp_path))
    out = _cli("convert", "mots", str(tmp_path / "nowhere"), "-d", "5", env=env)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "nnunet-transfer convert: error:" in out.stderr
