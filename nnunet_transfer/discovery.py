"""How nnunet-transfer finds nnU-Net's folders and nnU-Net finds nnunet-transfer's trainers.

- nnU-Net's folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``): :func:`nnunet_folder` and
  :func:`optional_nnunet_folder` are the one lookup every module uses. They read the variables at call time, as
  nnU-Net 2.8's ``nnunetv2.paths`` does (so a test or CLI that sets one late works), and take the value as nnU-Net
  does (no ``~`` expansion: the folder nnU-Net uses is the folder we use);
- our trainers: the ``nnUNet_extTrainer`` folder and the shell line setting it.
"""

from __future__ import annotations

import os
import shlex
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Mapping, Optional, Sequence

from nnunet_transfer.errors import NnUNetTransferError

#: nnU-Net 2.8's documented variable listing extra trainer folders (os.pathsep separated)
EXT_TRAINER_VARIABLE = "nnUNet_extTrainer"
NNUNET_PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class NnUNetFolderNotSetError(NnUNetTransferError, RuntimeError):
    """An nnU-Net path variable that a command needs is not set."""


def folder_not_set_message(variable: str, consequence: str = "") -> str:
    """``<variable> is not set[<consequence>]. Fix: export ...``: the message for an unset nnU-Net path variable."""
    return (f"{variable} is not set{consequence}. Fix: export {variable}=/path/to/{variable} "
            "(or eval \"$(nnunet-transfer env --workspace DIR)\")")


def optional_nnunet_folder(variable: str) -> Optional[Path]:
    """The folder an nnU-Net path variable names, read at call time; None when it is unset (or empty)."""
    value = os.environ.get(variable)
    return Path(value) if value else None


def nnunet_folder(variable: str) -> Path:
    """The folder an nnU-Net path variable names, read at call time; :class:`NnUNetFolderNotSetError` (a
    RuntimeError naming the variable and the fix) when it is unset."""
    folder = optional_nnunet_folder(variable)
    if folder is None:
        raise NnUNetFolderNotSetError(folder_not_set_message(variable))
    return folder


def set_nnunet_folders(variables: Sequence[str] = NNUNET_PATH_VARIABLES) -> List[Path]:
    """The folders of those ``variables`` that are set, in that order."""
    return [f for f in map(optional_nnunet_folder, variables) if f is not None]


def ext_trainer_dir() -> Path:
    """The folder whose shim module re-exports our trainers to nnU-Net."""
    return Path(__file__).resolve().parent / "nnunet_ext"


def ext_trainer_value(current: Optional[str] = None, extra_dirs: tuple = ()) -> str:
    """``nnUNet_extTrainer`` with our folder (and ``extra_dirs``) appended to ``current``, without duplicates."""
    parts = [p for p in (current or "").split(os.pathsep) if p]
    for d in (str(ext_trainer_dir()), *map(str, extra_dirs)):
        if d not in parts:
            parts.append(d)
    return os.pathsep.join(parts)


def export_lines(workspace: Optional[Path] = None, environ: Mapping[str, str] = os.environ) -> str:
    """POSIX shell lines for ``eval``: append our trainer folder to ``nnUNet_extTrainer``; with ``workspace``,
    also point unset nnU-Net path variables into it."""
    folder = shlex.quote(str(ext_trainer_dir()))
    lines = [
        f'case ":${{{EXT_TRAINER_VARIABLE}:-}}:" in *:{folder}:*) ;; '
        f'*) export {EXT_TRAINER_VARIABLE}="${{{EXT_TRAINER_VARIABLE}:+${EXT_TRAINER_VARIABLE}{os.pathsep}}}"{folder} ;; esac'
    ]
    if workspace is not None:
        for var in NNUNET_PATH_VARIABLES:
            # the quoted path stands alone (a default inside "${var:-...}" would be expanded: $(...) would run)
            target = shlex.quote(str(Path(workspace).resolve() / var))
            lines.append(f'[ -n "${{{var}:-}}" ] || export {var}={target}')
    return "\n".join(lines)


def nnunet_environment(workspace: Path, base: Optional[Mapping[str, str]] = None,
                       extra_trainer_dirs: tuple = ()) -> dict:
    """Environment for running ``nnUNetv2_*`` commands as subprocesses on ``workspace``'s folders."""
    env = dict(os.environ if base is None else base)
    workspace = Path(workspace).resolve()
    for var in NNUNET_PATH_VARIABLES:
        env[var] = str(workspace / var)
        Path(env[var]).mkdir(parents=True, exist_ok=True)
    env[EXT_TRAINER_VARIABLE] = ext_trainer_value(env.get(EXT_TRAINER_VARIABLE), extra_trainer_dirs)
    return env


@contextmanager
def environment_variables(values: Mapping[str, str]) -> Iterator[None]:
    """Within the block, these environment variables have these values; afterwards each has its old value again
    (or is unset). nnU-Net's ``_EnvPath`` objects read the variables on each use, so nnU-Net run in this process
    sees the values of the block."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        os.environ.update(values)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
