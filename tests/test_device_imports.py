"""The GPU check's premise, kept by CI: our networks and losses import and build with torch plus the copied
pure-Python packages alone, as on a GPU machine without nnU-Net's stack (no SimpleITK, blosc2, PyWavelets, nibabel...).

One subprocess imports every module of ``nnunet_transfer.architectures`` and ``nnunet_transfer.losses`` through
``benchmarks/device_env.py``'s import blocker, then runs ``benchmarks/device_check.py --build-only`` on one network
per architecture module at a 16^3 patch (a real fp32 training step each, and every loss once).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

#: one network per architecture module (the other depths and encoders reuse the same modules)
ONE_PER_MODULE = ["nnU-Net PlainConvUNet (plans)", "Med3DUNet ResNet-10", "ResUNet-ASPP", "Attention U-Net",
                  "MLEAM, plain encoder", "DoDNet dynamic head", "Med3D branches ResNet-10",
                  "Localiser (plans encoder)"]

CHECK = """
import importlib, pkgutil, sys

import nnunet_transfer.architectures, nnunet_transfer.losses

for package in (nnunet_transfer.architectures, nnunet_transfer.losses):
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
for absent in ("SimpleITK", "blosc2", "pywt", "nibabel"):
    try:
        importlib.import_module(absent)
    except ImportError:
        continue
    raise SystemExit(f"the import blocker let {{absent}} through")
sys.path.insert(0, {benchmarks!r})
import device_check

sys.exit(device_check.main(sys.argv[1:]))
"""


def _device_env():
    spec = importlib.util.spec_from_file_location("device_env", BENCHMARKS / "device_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_networks_and_losses_build_with_only_the_device_imports(tmp_path):
    device_env = _device_env()
    manifest = device_env.copy_device_deps(tmp_path / "deps")
    assert set(manifest["packages"]) == set(device_env.CARRIED_PACKAGES)
    assert manifest["bytes"] < 8 * 2 ** 20  # sources only: no compiled extensions, tests or byte code
    script = tmp_path / "check.py"
    script.write_text(CHECK.format(benchmarks=str(BENCHMARKS)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "device_env.py"), "simulate", "--deps", str(tmp_path / "deps"),
         str(script), "--device", "cpu", "--build-only", "--patch", "16", "16", "16", "--out", str(tmp_path / "out"),
         "--only", *ONE_PER_MODULE],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    doc = json.loads((tmp_path / "out" / "device_check.json").read_text())
    assert doc["environment"]["carried"]["packages"] == manifest["packages"]  # imported from the copy
    assert doc["environment"]["pywavelets"] is False
    assert list(doc["networks"]) == ONE_PER_MODULE
    assert all(n["eager"].get("fp32_step") == "ok" for n in doc["networks"].values()), doc["networks"]
    assert len(doc["losses"]) == 4 and all(e.get("forward_backward") == "ok" for e in doc["losses"].values())
    assert "error" not in doc["edge_targets"] and "error" not in doc["dynamic_head"]
    assert "torch_ms" in doc["edge_targets"] and doc["complete"]
