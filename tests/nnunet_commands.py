"""Running the real nnUNetv2_* commands on tiny generated data (helpers shared by the end-to-end tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterable, Optional

from nnunet_transfer.discovery import nnunet_environment

TRAINER_MODULE_HEADER = "import torch\n"


def tiny_trainer_source(name: str, base_module: str, base: str, epochs: int = 1, iterations: int = 2,
                        val_iterations: int = 1, extra: str = "") -> str:
    """Source of an nnU-Net trainer variant with a tiny schedule and no mirroring (fast on CPU)."""
    return textwrap.dedent(f"""
    from {base_module} import {base}


    class {name}({base}):
        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = {epochs}
            self.num_iterations_per_epoch = {iterations}
            self.num_val_iterations_per_epoch = {val_iterations}
            self.save_every = 1

        def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
            rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
            self.inference_allowed_mirroring_axes = None
            return rotation, dummy_2d, initial_patch_size, None
    """) + textwrap.dedent(extra)


class Workspace:
    """nnU-Net folders plus a folder of test trainers, and a runner for nnU-Net's commands."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.trainer_dir = self.root / "test_trainers"
        self.trainer_dir.mkdir(parents=True, exist_ok=True)
        self.env: Dict[str, str] = nnunet_environment(self.root, extra_trainer_dirs=(self.trainer_dir,))
        self.env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")

    @property
    def raw(self) -> Path:
        return Path(self.env["nnUNet_raw"])

    @property
    def preprocessed(self) -> Path:
        return Path(self.env["nnUNet_preprocessed"])

    @property
    def results(self) -> Path:
        return Path(self.env["nnUNet_results"])

    def add_trainers(self, module_name: str, sources: Iterable[str]) -> None:
        body = TRAINER_MODULE_HEADER + "\n".join(sources)
        (self.trainer_dir / f"{module_name}.py").write_text(body)

    def run(self, *args: str, timeout: int = 1200, extra_env: Optional[Dict[str, str]] = None) -> str:
        """Run a command; on failure raise with the tail of its output (the test log shows why)."""
        env = dict(self.env, **(extra_env or {}))
        proc = subprocess.run(list(args), env=env, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        (self.root / "commands.log").open("a").write(f"$ {' '.join(args)}\n{output}\n")
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed with exit code {proc.returncode}:\n{output[-6000:]}")
        return output

    def train(self, dataset: int, configuration: str, fold: str, trainer: str, *extra: str, plans: str = "nnUNetPlans",
              timeout: int = 1800) -> str:
        # nnU-Net's data augmentation workers are not needed for a few iterations; 0 keeps CPU tests light
        return self.run("nnUNetv2_train", str(dataset), configuration, fold, "-tr", trainer, "-p", plans,
                        "-device", "cpu", *extra, timeout=timeout, extra_env={"nnUNet_n_proc_DA": "0"})

    def cli(self, *args: str, timeout: int = 1200) -> str:
        return self.run(sys.executable, "-m", "nnunet_transfer.cli.main", *args, timeout=timeout)


def model_folder(ws: Workspace, dataset_name: str, trainer: str, configuration: str,
                 plans: str = "nnUNetPlans") -> Path:
    return ws.results / dataset_name / f"{trainer}__{plans}__{configuration}"


def python_has_gpu() -> bool:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1")
