"""A folder with nnU-Net's three data folders, and running nnU-Net's own commands on it.

Used by ``nnunet-transfer demo`` and by the end-to-end tests: both drive the real ``nnUNetv2_*`` commands as
subprocesses, with nnU-Net's path variables pointing into the workspace and ``nnUNet_extTrainer`` naming our
trainer folder plus a folder of short trainer variants written for the run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from nnunet_transfer.discovery import nnunet_environment
from nnunet_transfer.errors import NnUNetTransferError


def trainer_variant_source(name: str, base: str, base_module: str = "nnunet_transfer.trainers", epochs: int = 1,
                           iterations: int = 2, val_iterations: int = 1, mirroring: bool = False,
                           body: str = "", seed: Optional[int] = None, final_validation: bool = True,
                           threads: Optional[int] = None) -> str:
    """Python source of an nnU-Net trainer variant with a short schedule (nnU-Net's own way to change one).

    ``mirroring=False`` also turns off test-time mirroring, which makes CPU validation and inference 4-8x faster.
    ``seed`` fixes everything random in the training (:func:`~nnunet_transfer.utils.seeding.seed_everything`,
    called before nnU-Net builds anything). ``final_validation=False`` skips nnU-Net's sliding-window prediction
    of the validation cases after training (for runs whose evaluation happens elsewhere).
    ``threads``: CPU threads of the training (``nnUNetv2_train -device cpu`` takes all cores; trainings that run side
    by side take one each). ``body`` is extra class body code (indented by 4 spaces by the caller or not at all).
    The source is a complete module: several variants joined by blank lines are one too.
    """
    lines = [
        "import torch",
        f"from {base_module} import {base}",
        *(["from nnunet_transfer.utils.seeding import seed_everything"] if seed is not None else []),
        "",
        "",
        f"class {name}({base}):",
        '    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):',
        *([f"        torch.set_num_threads({int(threads)})"] if threads is not None else []),
        *([f"        seed_everything({int(seed)})"] if seed is not None else []),
        "        super().__init__(plans, configuration, fold, dataset_json, device)",
        f"        self.num_epochs = {epochs}",
        f"        self.num_iterations_per_epoch = {iterations}",
        f"        self.num_val_iterations_per_epoch = {val_iterations}",
        "        self.save_every = 1",
    ]
    if not mirroring:
        lines += [
            "",
            "    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):",
            "        rotation, dummy_2d, patch, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()",
            "        self.inference_allowed_mirroring_axes = None",
            "        return rotation, dummy_2d, patch, None",
        ]
    if not final_validation:
        lines += [
            "",
            "    def perform_actual_validation(self, save_probabilities: bool = False):",
            '        self.print_to_log_file("final validation skipped (this variant is evaluated elsewhere)")',
        ]
    if body:
        lines += ["", textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")]
    return "\n".join(lines) + "\n"


def nnunet_command(name: str) -> str:
    """Path of an ``nnUNetv2_*`` console script of the running Python (falls back to PATH)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH; is nnunetv2 installed?")
    return found


class CommandFailed(NnUNetTransferError, RuntimeError):
    """An nnU-Net command exited with an error; the message holds the command and the end of its output."""


class NnUNetWorkspace:
    """nnU-Net folders under ``root`` plus a folder of trainer variants, and a runner for nnU-Net's commands."""

    def __init__(self, root: Path, env_base: Optional[Dict[str, str]] = None, verbose: bool = False):
        self.root = Path(root).resolve()
        self.trainer_dir = self.root / "trainer_variants"
        self.trainer_dir.mkdir(parents=True, exist_ok=True)
        self.env = nnunet_environment(self.root, base=env_base, extra_trainer_dirs=(self.trainer_dir,))
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        # OpenMP threads that wait for work sleep instead of spinning: a training on all cores then does not slow to
        # a crawl when anything else runs on the machine (spinning threads steal the cores they wait for)
        self.env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.verbose = verbose
        self.log_file = self.root / "commands.log"
        self._log_lock = threading.Lock()  # commands may run side by side (the demo's paired fine-tunings)

    @property
    def raw(self) -> Path:
        return Path(self.env["nnUNet_raw"])

    @property
    def preprocessed(self) -> Path:
        return Path(self.env["nnUNet_preprocessed"])

    @property
    def results(self) -> Path:
        return Path(self.env["nnUNet_results"])

    def write_trainers(self, module_name: str, sources: Iterable[str]) -> Path:
        """Write trainer variants into a module nnU-Net will find through ``nnUNet_extTrainer``."""
        path = self.trainer_dir / f"{module_name}.py"
        path.write_text("\n\n".join(sources))
        return path

    def model_folder(self, dataset_name: str, trainer: str, configuration: str, plans: str = "nnUNetPlans") -> Path:
        return self.results / dataset_name / f"{trainer}__{plans}__{configuration}"

    def run(self, args: Sequence[str], timeout: Optional[float] = None,
            extra_env: Optional[Dict[str, str]] = None, echo: Optional[Callable[[str], bool]] = None) -> str:
        """Run a command with the workspace environment; its output goes to ``commands.log``.

        ``echo(line)`` selects output lines to show while the command runs (progress of long trainings).
        ``timeout`` (seconds) kills the command when it runs longer. Raises :class:`CommandFailed` with the end of
        the output when it fails or times out.
        """
        env = dict(self.env, **(extra_env or {}))
        started = time.time()
        lines: List[str] = []
        with subprocess.Popen(list(map(str, args)), env=env, cwd=self.root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc:
            # the output is read until the command ends, so the time limit is a timer that kills it
            timer = threading.Timer(timeout, proc.kill) if timeout is not None else None
            if timer is not None:
                timer.daemon = True
                timer.start()
            try:
                for line in proc.stdout:
                    lines.append(line)
                    if self.verbose or (echo is not None and echo(line)):
                        print("    " + line.rstrip(), flush=True)
                proc.wait()
            except BaseException:
                proc.kill()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
        output = "".join(lines)
        timed_out = timeout is not None and proc.returncode != 0 and time.time() - started >= timeout
        with self._log_lock, self.log_file.open("a") as log:
            log.write(f"$ {' '.join(map(str, args))}   ({time.time() - started:.0f} s, exit {proc.returncode}"
                      f"{', timed out' if timed_out else ''})\n")
            log.write(output + "\n")
        if timed_out:
            raise CommandFailed(f"{' '.join(map(str, args))} ran longer than {timeout:g} s and was stopped; full "
                                f"log: {self.log_file}\n{output[-6000:]}")
        if proc.returncode != 0:
            raise CommandFailed(f"{' '.join(map(str, args))} failed (exit {proc.returncode}); full log: "
                                f"{self.log_file}\n{output[-6000:]}")
        return output

    def nnunet(self, command: str, *args: str, timeout: Optional[float] = None,
               extra_env: Optional[Dict[str, str]] = None, echo: Optional[Callable[[str], bool]] = None) -> str:
        return self.run([nnunet_command(command), *map(str, args)], timeout=timeout, extra_env=extra_env, echo=echo)

    def train(self, dataset: int, configuration: str, fold: str, trainer: str, *extra: str,
              plans: str = "nnUNetPlans", device: str = "cpu", timeout: Optional[float] = None,
              echo: Optional[Callable[[str], bool]] = None) -> str:
        # nnU-Net's augmentation workers and its 8 final-validation workers do not pay off for short CPU runs
        return self.nnunet("nnUNetv2_train", dataset, configuration, fold, "-tr", trainer, "-p", plans,
                           "-device", device, *extra, timeout=timeout, echo=echo,
                           extra_env={"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"})

    def cli(self, *args: str, timeout: Optional[float] = None) -> str:
        """Run ``nnunet-transfer`` itself in the workspace environment."""
        return self.run([sys.executable, "-m", "nnunet_transfer.cli.main", *map(str, args)], timeout=timeout)

    def predict(self, input_dir: Path, output_dir: Path, dataset: int, configuration: str, trainer: str,
                folds: List[str], plans: str = "nnUNetPlans", device: str = "cpu") -> str:
        return self.nnunet("nnUNetv2_predict", "-i", input_dir, "-o", output_dir, "-d", dataset, "-c", configuration,
                           "-tr", trainer, "-p", plans, "-f", *folds, "-device", device, "-npp", "1", "-nps", "1",
                           "--disable_tta")
