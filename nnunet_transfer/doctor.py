"""``nnunet-transfer doctor``: is this shell ready to train with our trainers? Says what is wrong and how to fix it."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List, Tuple

from nnunet_transfer.discovery import (EXT_TRAINER_VARIABLE, NNUNET_PATH_VARIABLES, ext_trainer_dir,
                                       folder_not_set_message, optional_nnunet_folder)

_PROBE = (
    "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
    "import nnunet_transfer.trainers as ours\n"
    "found = find('MOTSPretrainTrainer')\n"
    "print('SAME' if found is ours.MOTSPretrainTrainer else 'OTHER ' + found.__module__)\n"
)


def check_paths() -> List[Tuple[bool, str]]:
    results = []
    for var in NNUNET_PATH_VARIABLES:
        folder = optional_nnunet_folder(var)
        value = str(folder) if folder is not None else None
        if value is None:
            results.append((False, folder_not_set_message(var)))
        elif os.path.exists(value) and not os.path.isdir(value):
            results.append((False, f"{var}={value} is a file, not a folder. Fix: point {var} at a folder "
                                   f"(export {var}=/path/to/{var})"))
        elif not os.path.isdir(value):
            results.append((False, f"{var}={value} does not exist. Fix: mkdir -p {value}"))
        elif not os.access(value, os.W_OK):
            results.append((False, f"{var}={value} is not writable"))
        else:
            results.append((True, f"{var}={value}"))
    return results


def check_trainer_discovery() -> Tuple[bool, str]:
    folder = str(ext_trainer_dir())
    value = os.environ.get(EXT_TRAINER_VARIABLE, "")
    if folder not in value.split(os.pathsep):
        return False, (f"{EXT_TRAINER_VARIABLE} does not contain {folder}, so nnUNetv2_train/_predict cannot find "
                       f"MOTSPretrainTrainer. Fix: eval \"$(nnunet-transfer env)\" (add it to your shell profile)")
    probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
    if probe.returncode != 0:
        return False, "nnU-Net's trainer lookup failed:\n" + probe.stderr.strip()[-2000:]
    answer = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else ""
    if answer != "SAME":
        return False, f"nnU-Net found a different MOTSPretrainTrainer ({answer}); remove the other one from its path"
    return True, f"nnU-Net finds our trainers through {EXT_TRAINER_VARIABLE}"


def check_device() -> Tuple[bool, str]:
    import torch

    if torch.cuda.is_available():
        return True, f"torch {torch.__version__}, CUDA device: {torch.cuda.get_device_name(0)} (use -device cuda)"
    return True, f"torch {torch.__version__}, no CUDA device: train and predict with -device cpu (slow)"


def check_nnunet_version() -> Tuple[bool, str]:
    from importlib.metadata import version

    v = version("nnunetv2")
    ok = v.startswith("2.8.")
    return ok, f"nnunetv2 {v}" + ("" if ok else " (nnunet-transfer is built for 2.8.x: pip install 'nnunetv2>=2.8.1,<2.9')")


def run_doctor() -> int:
    """Print one line per check; exit code 1 when anything needs fixing."""
    checks = [check_nnunet_version(), *check_paths(), check_trainer_discovery(), check_device()]
    for ok, message in checks:
        print(f"[{'ok' if ok else 'FIX'}] {message}")
    failed = sum(not ok for ok, _ in checks)
    print("all good" if not failed else f"{failed} problem(s) to fix")
    return 0 if not failed else 1
