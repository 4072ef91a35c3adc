"""Import structure: the networks need nothing of ours from pretrained/ or losses/, and no package import cycles.

Each module is imported first, in an interpreter where no other module of ours is loaded yet (third-party packages
stay loaded, to keep this quick), so an import cycle or a hidden dependency shows up whatever the test order.

The whole package's imports (read with ``ast``, function-level imports included) follow :data:`LAYERS`: a package
imports only packages of lower layers (never one of its own layer or above), so weights flow one way,
``pretrained`` (bytes -> named tensors) <- ``transfer`` (map, adapt, load, report) <- trainers/planning <- cli, and
``architectures`` needs nothing of ours but the error type.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nnunet_transfer.architectures

ROOT = Path(__file__).resolve().parents[1]
#: packages and modules whose every module must import on its own
IMPORTED_FIRST = ("nnunet_transfer.architectures", "nnunet_transfer.pretrained", "nnunet_transfer.pretrained.formats",
                  "nnunet_transfer.transfer",
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
    assert ("nnunet_transfer.pretrained.formats.medicalnet" in first_imports
            and "nnunet_transfer.transfer.weights" in first_imports)


def _architecture_modules() -> list:
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules(nnunet_transfer.architectures.__path__,
                                                       "nnunet_transfer.architectures."))


@pytest.mark.parametrize("module", _architecture_modules())
def test_architectures_import_nothing_of_ours_from_pretrained_or_losses(first_imports, module):
    loaded = first_imports[module]["loaded"]
    assert not [m for m in loaded if m.startswith(FORBIDDEN_FOR_ARCHITECTURES)], loaded


#: the package's layers, lowest first: a package (or top-level module) imports only from lower layers; the package's
#: own ``__init__`` (version) counts as the lowest layer
LAYERS = (
    ("", "errors"),
    ("utils", "discovery", "zoo"),
    ("architectures", "pretrained", "losses", "augmentation", "dataset_lookup", "workspace", "doctor"),
    ("data", "transfer"),
    ("evaluation", "planning"),
    ("trainers",),
    ("inference", "recipes", "nnunet_ext"),
    ("cli", "train_ddp"),
)
#: what architectures/ may import besides itself: the one error type every package shares
ARCHITECTURES_MAY_IMPORT = {"errors"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(module: str) -> str:
    """``nnunet_transfer.transfer.weights`` -> ``transfer``; the package's own ``__init__`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> dict:
    """``{module: {imported modules of ours}}`` of every module, function-level imports included."""
    modules = {_module_name(p): p for p in (ROOT / "nnunet_transfer").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # "from pkg import mod" imports pkg.mod when that is a module, else a name of pkg
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            imported |= {t for t in targets if t == "nnunet_transfer" or t.startswith("nnunet_transfer.")}
        graph[name] = imported - {name}
    return graph


def _layer(package: str) -> int:
    found = [i for i, layer in enumerate(LAYERS) if package in layer]
    assert found, f"package {package!r} is in no layer of LAYERS: give it one"
    return found[0]


def test_imports_flow_one_way_between_packages():
    upward = []
    for module, imported in import_graph().items():
        source = _package_of(module)
        for target in map(_package_of, imported):
            if target == source:
                continue
            if source == "architectures" and target not in ARCHITECTURES_MAY_IMPORT:
                upward.append(f"{module} -> {target} (architectures import nothing of ours but errors)")
            elif _layer(target) >= _layer(source):
                upward.append(f"{module} -> {target} (layer {_layer(source)} -> {_layer(target)})")
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def find_cycles(graph: dict) -> list:
    """Import cycles of ``graph`` as ``a -> b -> a`` strings (depth-first search); a package's ``__init__`` importing
    its own modules, which import the package back, is how packages work and not reported."""
    cycles, state = [], {}

    def visit(module: str, stack: list) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target in graph and target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return [" -> ".join(c) for c in cycles if not all(m.startswith(c[0] + ".") for m in c[1:-1])]


def test_no_module_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_see_cycles_and_function_level_imports():
    """Negative controls: the old med3d <-> medicalnet cycle is found, and so is a function-level import."""
    old = {"nnunet_transfer.architectures.med3d": {"nnunet_transfer.pretrained.medicalnet"},
           "nnunet_transfer.pretrained.medicalnet": {"nnunet_transfer.architectures.med3d"}}
    assert len(find_cycles(old)) == 1
    code = "def f():\n    from nnunet_transfer.transfer.weights import transfer_weights\n"
    tree = ast.parse(code)
    found = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert found == ["nnunet_transfer.transfer.weights"]
    assert _layer(_package_of(found[0])) > _layer("architectures")
