"""``nnunet-transfer``: the commands that sit beside nnU-Net's own ``nnUNetv2_*`` commands.

Each subcommand imports its implementation lazily so that ``nnunet-transfer env`` (run in every new shell) stays
instant. Errors the user can fix (:class:`~nnunet_transfer.errors.NnUNetTransferError`, missing files, bad data,
unset variables, a full disk) are printed as one clear message with exit code 1, without a traceback; ``--debug``
shows the traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, List, Optional

from nnunet_transfer import __version__


#: one module per capability, each adding its subcommands with ``register``
COMMAND_MODULES = ("environment", "data", "plan", "transfer", "evaluate", "predict", "recipes", "leakage")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-transfer",
        description="Transfer learning for nnU-Net v2: MOTS/DoDNet pretraining, fine-tuning, Med3D, MLEAM.")
    parser.add_argument("--version", action="version", version=f"nnunet-transfer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"nnunet_transfer.cli.{name}").register(sub)
    return parser


#: exceptions that mean "the user's input is wrong", printed without a traceback (OSError: a full disk, missing
#: permissions, a file where a folder should be)
def _user_errors() -> tuple:
    from nnunet_transfer.errors import NnUNetTransferError

    return (NnUNetTransferError, OSError, ValueError, RuntimeError)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    if args.debug:
        return func(args)
    try:
        return func(args)
    except _user_errors() as e:
        message = str(e)
        print(f"nnunet-transfer {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
