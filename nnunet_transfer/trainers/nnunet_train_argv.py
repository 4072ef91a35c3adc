"""Read ``nnUNetv2_train``'s command line exactly as nnU-Net does, to find the ``-pretrained_weights`` file.

Why this module exists: nnU-Net's ``-pretrained_weights`` loader (``nnunetv2.run.load_pretrained_weights``)
unpickles the file fully (``torch.load(weights_only=False)``), so a booby-trapped file runs its code. Our trainers
must check that file first, but nnU-Net never hands the path to the trainer: it only calls ``trainer.initialize()``
and then its loader. So the trainer reads the path from ``sys.argv`` itself, and it must read it exactly as
nnU-Net's argparse does, or a spelling argparse accepts (``-pretrained_weights=FILE``, the abbreviation
``-pretrained FILE``, the flag given twice: the last one wins) slips past the check.

Hand-written scanning cannot get that right, so :func:`nnunet_train_parser` rebuilds nnU-Net's parser: the same
arguments with the same names, types, actions and defaults as ``nnunetv2.run.run_training.run_training_entry``
(help texts left out), run by the same ``argparse`` of the running Python, so abbreviations, ``=`` values and
``--`` behave as in nnU-Net on every Python version. ``tests/test_untrusted_files.py`` checks this table against
the ``add_argument`` calls in nnU-Net's own source, so an nnU-Net upgrade that changes the parser fails CI.

A command line nnU-Net's parser rejects never reaches nnU-Net's loader (argparse exits first), so for such a
command line (or any other program's, e.g. pytest's) :func:`pretrained_weights_argument` returns None.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["NNUNET_TRAIN_ARGUMENTS", "nnunet_train_parser", "pretrained_weights_argument"]

#: ``(flags, keyword arguments)`` of every ``parser.add_argument`` in nnU-Net 2.8's ``run_training_entry``, in order
NNUNET_TRAIN_ARGUMENTS: Tuple[Tuple[Tuple[str, ...], Dict[str, Any]], ...] = (
    (("dataset_name_or_id",), {"type": str}),
    (("configuration",), {"type": str}),
    (("fold",), {"type": str}),
    (("-tr",), {"type": str, "required": False, "default": "nnUNetTrainer"}),
    (("-p",), {"type": str, "required": False, "default": "nnUNetPlans"}),
    (("-pretrained_weights",), {"type": str, "required": False, "default": None}),
    (("-num_gpus",), {"type": int, "default": 1, "required": False}),
    (("--npz",), {"action": "store_true", "required": False}),
    (("--c",), {"action": "store_true", "required": False}),
    (("--val",), {"action": "store_true", "required": False}),
    (("--val_best",), {"action": "store_true", "required": False}),
    (("--disable_checkpointing",), {"action": "store_true", "required": False}),
    (("-device",), {"type": str, "default": "cuda", "required": False}),
)


class _Rejected(Exception):
    """nnU-Net's parser would reject this command line (or print its help and exit)."""


class _SilentParser(argparse.ArgumentParser):
    """``ArgumentParser`` that raises instead of printing and exiting (same parsing, no side effects)."""

    def exit(self, status: int = 0, message: Optional[str] = None) -> None:  # -h, errors
        raise _Rejected(message or "")

    def error(self, message: str) -> None:
        raise _Rejected(message)

    def _print_message(self, message: str, file: Any = None) -> None:
        pass


def nnunet_train_parser(arguments: Sequence[Tuple[Tuple[str, ...], Dict[str, Any]]] = NNUNET_TRAIN_ARGUMENTS
                        ) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` configured like ``nnUNetv2_train``'s (argparse defaults: abbreviations allowed,
    ``-h`` added), that raises instead of exiting."""
    parser = _SilentParser(prog="nnUNetv2_train")
    for flags, kwargs in arguments:
        parser.add_argument(*flags, **kwargs)
    return parser


def parse_nnunet_train_argv(argv: Optional[Sequence[str]] = None) -> Optional[argparse.Namespace]:
    """nnU-Net's parse of ``argv`` (default ``sys.argv``; ``argv[0]`` is the program), or None when nnU-Net's
    parser would reject it."""
    args: List[str] = list(sys.argv if argv is None else argv)[1:]
    try:
        return nnunet_train_parser().parse_args(args)
    except _Rejected:
        return None


def pretrained_weights_argument(argv: Optional[Sequence[str]] = None) -> Optional[str]:
    """The file nnU-Net's ``-pretrained_weights`` gets from this command line (default ``sys.argv``), or None."""
    namespace = parse_nnunet_train_argv(argv)
    return None if namespace is None else namespace.pretrained_weights
