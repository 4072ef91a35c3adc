"""Import structure: the networks need nothing of ours from pretrained/ or losses/, and no package import cycles.

Each module is imported first, in an interpreter where no other module of ours is loaded yet (third-party packages
stay loaded, to keep this quick), so an import cycle or a hidden dependency shows up whatever the test order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nnunet_transfer.architectures

ROOT = Path(__file__).resolve().parents[1]
#: packages and modules whose every module must import on its own
IMPORTED_FIRST = ("nnunet_transfer.architectures", "nnunet_transfer.pretrained", "nnunet_transfer.transfer",
                  "nnunet_transfer.planning.plan_arch", "nnunet_transfer.discovery", "nnunet_transfer.dataset_lookup")
FORBIDDEN_FOR_ARCHITECTURES = ("nnunet_transfer.pretrained", "nnunet_transfer.losses")

_SCRIPT = r"""
import importlib, json, pkgutil, sys, traceback

targets = json.loads(sys.argv[1])
names = []
for target in targets:
    module = importlib.import_module(target)
    if hasattr(module, "__path__"):
        names += sorted(m.name for m in pkgutil.iter_modules(module.__path__, target + "."))
    else:
        names.append(target)
result = {}
for name in names:
    for loaded in [m for m in sys.modules if m == "nnunet_transfer" or m.startswith("nnunet_transfer.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        result[name] = {"error": traceback.format_exc(), "loaded": []}
        continue
    result[name] = {"error": None, "loaded": sorted(m for m in sys.modules if m.startswith("nnunet_transfer."))}
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def first_imports() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(IMPORTED_FIRST)], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_module_imports_on_its_own(first_imports):
    failed = {name: r["error"] for name, r in first_imports.items() if r["error"]}
    assert not failed, "\n".join(f"{name}:\n{error}" for name, error in failed.items())
    assert "nnunet_transfer.pretrained.medicalnet" in first_imports and "nnunet_transfer.transfer.weights" in first_imports


def _architecture_modules() -> list:
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules(nnunet_transfer.architectures.__path__,
                                                       "nnunet_transfer.architectures."))


@pytest.mark.parametrize("module", _architecture_modules())
def test_architectures_import_nothing_of_ours_from_pretrained_or_losses(first_imports, module):
    loaded = first_imports[module]["loaded"]
    assert not [m for m in loaded if m.startswith(FORBIDDEN_FOR_ARCHITECTURES)], loaded
