"""``nnunet-transfer``: the commands that sit beside nnU-Net's own ``nnUNetv2_*`` commands.

Each subcommand imports its implementation lazily so that ``nnunet-transfer env`` (run in every new shell) stays
instant.

Error policy: a failure the user can fix is an :class:`~nnunet_transfer.errors.NnUNetTransferError`, raised where the
check is made and carrying the file and the fix, or an ``OSError`` (a missing file, missing permissions, a full
disk: the operating system names the file). Both are printed as one line with exit code 1. Everything else is a
bug: it keeps its traceback, followed by one line asking to report it. ``--debug`` shows tracebacks for all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, List, Optional

from nnunet_transfer import __version__


#: one module per capability, each adding its subcommands with ``register``
COMMAND_MODULES = ("environment", "data", "plan", "transfer", "evaluate", "predict", "recipes", "zoo", "leakage")

#: where bugs are reported (the last line after a traceback)
BUG_REPORT_LINE = ("nnunet-transfer: this is a bug, not a problem with your input; please report it with the "
                   "command line and the traceback above (nnunet-transfer --version: {version})")


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


def user_error_line(error: BaseException) -> Optional[str]:
    """The one line for a user error (ours, or an OSError naming its file); None for anything else (a bug)."""
    from nnunet_transfer.errors import NnUNetTransferError

    if isinstance(error, NnUNetTransferError):
        return str(error)
    if isinstance(error, OSError):
        if error.filename is not None and error.strerror:
            where = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 is not None else "")
            return f"{where}: {error.strerror}"
        return str(error) or type(error).__name__
    return None


def _bug_line(error: BaseException) -> str:
    """The line after a traceback: a bug of ours, or an error nnU-Net raised (often about its input)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    if where.split(".")[0] in ("nnunetv2", "dynamic_network_architectures", "batchgenerators"):
        return (f"nnunet-transfer: the error above was raised inside nnU-Net ({where}); check the input it names, "
                "and report it to nnunet-transfer if your input is right")
    return BUG_REPORT_LINE.format(version=__version__)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    if args.debug:
        return func(args)
    try:
        return func(args)
    except Exception as e:  # noqa: BLE001 - sorted into user errors (one line) and bugs (re-raised)
        line = user_error_line(e)
        if line is None:
            import traceback

            traceback.print_exc()
            print(_bug_line(e), file=sys.stderr)
            return 2
        print(f"nnunet-transfer {args.command}: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
