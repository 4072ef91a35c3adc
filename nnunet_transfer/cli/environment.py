"""``nnunet-transfer`` commands. nnU-Net's environment: the shell line that lets nnU-Net find our trainers, and the
checks of a set-up."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_env(args: argparse.Namespace) -> int:
    from nnunet_transfer.discovery import export_lines

    print(export_lines(Path(args.workspace) if args.workspace else None))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from nnunet_transfer.doctor import run_doctor

    return run_doctor()


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``nnunet-transfer`` parser."""
    p = sub.add_parser("env", help="print the shell line that lets nnU-Net find our trainers: "
                                   'eval "$(nnunet-transfer env)"')
    p.add_argument("--workspace", help="also point unset nnUNet_raw/_preprocessed/_results into this folder")
    p.set_defaults(func=_cmd_env)

    p = sub.add_parser("doctor", help="check nnU-Net path variables, trainer discovery and the torch device")
    p.set_defaults(func=_cmd_doctor)
