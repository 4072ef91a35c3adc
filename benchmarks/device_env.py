"""Running the GPU check on a GPU machine that has PyTorch but not nnU-Net, and imitating such a machine here.

The GPU check (``device_check.py``) needs, besides PyTorch, numpy and scipy, three pure-Python packages of nnU-Net's
stack: dynamic-network-architectures (every network), nnunetv2 (the HEC loss subclasses its ``DC_and_CE_loss``, the
localiser builds the plans' network with its ``get_network_from_plans``) and batchgenerators
(``get_network_from_plans`` imports its file helpers). On a GPU machine without nnU-Net (and without a package
index to install it from) their ``.py`` sources are copied along (:data:`CARRIED_PACKAGES`): ``copy`` writes them
with a manifest of versions. Only the modules of nnunetv2 that import without its native I/O stack (SimpleITK,
blosc2, nibabel...) work there; :func:`install_import_blocker` makes an interpreter with the full stack behave the
same way, so a tiny CPU run and a unit test show that the check needs nothing else.

    python benchmarks/device_env.py copy                      # -> benchmarks/.device_deps (git-ignored)
    python benchmarks/device_env.py simulate SCRIPT [ARGS...] # run SCRIPT importing as that machine would
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import runpy
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

#: git-ignored folder that goes to the GPU machine with the repository
DEPS_DIR = Path(__file__).resolve().parent / ".device_deps"

#: import name -> distribution name of the pure-Python packages that travel as sources
CARRIED_PACKAGES = {
    "dynamic_network_architectures": "dynamic-network-architectures",
    "nnunetv2": "nnunetv2",
    "batchgenerators": "batchgenerators",
}

#: import names of nnU-Net's and our requirements that a machine with only PyTorch, numpy and scipy lacks; importing
#: one there fails, and under the blocker here too
ABSENT_ON_DEVICE = ("SimpleITK", "blosc2", "pywt", "nibabel", "acvl_utils", "batchgeneratorsv2", "dicom2nifti",
                    "graphviz", "imagecodecs", "yacs", "surface_distance")

MANIFEST = "MANIFEST.json"


def _installed_package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # top-level packages with an empty __init__: nothing heavy runs
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name} is not installed in {sys.executable}; install nnunet-transfer's "
                                  "requirements (bash scripts/setup.sh) before copying the device dependencies")
    return Path(list(spec.submodule_search_locations)[0])


def copy_device_deps(dest: Path = DEPS_DIR) -> dict:
    """Copy the ``.py`` sources of :data:`CARRIED_PACKAGES` into ``dest`` (replaced), with a manifest of versions.

    Test folders and byte code stay behind. Returns the manifest (package -> version, total bytes).
    """
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    manifest: dict = {"packages": {}, "bytes": 0}
    for name, dist in CARRIED_PACKAGES.items():
        src = _installed_package_dir(name)
        for file in sorted(src.rglob("*.py")):
            rel = file.relative_to(src)
            if "tests" in rel.parts or "__pycache__" in rel.parts:
                continue
            target = dest / name / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
            manifest["bytes"] += target.stat().st_size
        manifest["packages"][name] = importlib.metadata.version(dist)
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(deps_dir: Path = DEPS_DIR) -> Optional[dict]:
    """The manifest :func:`copy_device_deps` wrote, or None when the packages were not carried (installed ones)."""
    path = Path(deps_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


class DeviceImportBlocker(importlib.abc.MetaPathFinder):
    """Imports as on a machine without nnU-Net: :data:`ABSENT_ON_DEVICE` fail, :data:`CARRIED_PACKAGES` come from
    ``deps_dir``."""

    def __init__(self, deps_dir: Path):
        self.deps_dir = str(Path(deps_dir).resolve())

    def find_spec(self, fullname: str, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in ABSENT_ON_DEVICE:
            raise ModuleNotFoundError(f"No module named {fullname!r} (absent without nnU-Net's I/O stack; "
                                      "imitated by benchmarks/device_env.py)", name=fullname)
        if fullname in CARRIED_PACKAGES:  # submodules follow the package's __path__, i.e. stay in deps_dir
            spec = importlib.machinery.PathFinder.find_spec(fullname, [self.deps_dir])
            if spec is None:
                raise ModuleNotFoundError(f"No module named {fullname!r} in {self.deps_dir}; run "
                                          "`python benchmarks/device_env.py copy` first", name=fullname)
            return spec
        return None


def install_import_blocker(deps_dir: Path = DEPS_DIR) -> DeviceImportBlocker:
    """Make this interpreter import as a machine without nnU-Net does (call before anything imports the affected
    packages)."""
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in (*ABSENT_ON_DEVICE, *CARRIED_PACKAGES))
    if loaded:
        raise RuntimeError(f"cannot imitate a machine without nnU-Net: {loaded[:5]} are already imported; install the blocker "
                           "first (python benchmarks/device_env.py simulate SCRIPT)")
    if read_manifest(deps_dir) is None:
        raise FileNotFoundError(f"{deps_dir} holds no carried packages; run `python benchmarks/device_env.py copy "
                                f"--dest {deps_dir}` first")
    blocker = DeviceImportBlocker(deps_dir)
    sys.meta_path.insert(0, blocker)
    return blocker


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    copy = sub.add_parser("copy", help="copy the carried packages' sources into --dest")
    copy.add_argument("--dest", type=Path, default=DEPS_DIR, help=f"target folder (default {DEPS_DIR})")
    sim = sub.add_parser("simulate", help="run a Python script importing as a machine without nnU-Net would")
    sim.add_argument("--deps", type=Path, default=DEPS_DIR, help="folder made by `copy`")
    sim.add_argument("script", type=Path)
    sim.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "copy":
        manifest = copy_device_deps(args.dest)
        print(f"copied {manifest['packages']} to {args.dest} ({manifest['bytes'] / 2 ** 20:.1f} MiB)")
        return 0
    install_import_blocker(args.deps)
    sys.path.insert(0, str(args.script.resolve().parent))
    sys.argv = [str(args.script), *args.args]
    try:
        runpy.run_path(str(args.script), run_name="__main__")
    except SystemExit as done:  # the script's own exit status
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
