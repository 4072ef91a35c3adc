"""How nnU-Net invoked our code: the ``nnUNetv2_train`` command line, and whether nnU-Net's predictor is the caller.

nnU-Net hands a trainer only what its constructor takes (plans, configuration, fold, dataset.json, device) and calls
the network builder with the same arguments in training and in inference. Two decisions need more than that, and
there is no nnU-Net hook that gives it, so they read it from the process itself. Both live here, each with why.

1. The ``-pretrained_weights`` file (:func:`pretrained_weights_argument`)
-------------------------------------------------------------------------
nnU-Net's ``-pretrained_weights`` loader (``nnunetv2.run.load_pretrained_weights``) unpickles the file fully
(``torch.load(weights_only=False)``), so a booby-trapped file runs its code. Our trainers must check that file first
(:mod:`nnunet_transfer.trainers.guarded`), but nnU-Net never hands the path to the trainer: ``run_training`` only
calls ``trainer.initialize()`` and then its loader. So the trainer reads the path from ``sys.argv`` itself, and it
must read it exactly as nnU-Net's argparse does, or a spelling argparse accepts (``-pretrained_weights=FILE``, the
abbreviation ``-pretrained FILE``, the flag given twice: the last one wins) slips past the check.

How nnU-Net's parser behaves: ``run_training_entry`` builds a plain ``argparse.ArgumentParser`` (argparse defaults:
abbreviations allowed, ``-h`` added, ``=`` values and ``--`` accepted) with the arguments of
:data:`NNUNET_TRAIN_ARGUMENTS`, and exits on a command line it rejects. Hand-written scanning cannot match that, so
:func:`nnunet_train_parser` rebuilds the parser: the same arguments with the same names, types, actions and defaults
(help texts left out), run by the same ``argparse`` of the running Python, so every spelling behaves as in nnU-Net
on every Python version. ``tests/test_untrusted_files.py`` checks this table against the ``add_argument`` calls in
nnU-Net's own source, so an nnU-Net upgrade that changes the parser fails CI. A command line nnU-Net's parser rejects
never reaches nnU-Net's loader (argparse exits first), so for such a command line (or any other program's, e.g.
pytest's) :func:`pretrained_weights_argument` returns None. Python code that calls ``run_training`` itself has no
such command line and must check the file itself (``guarded.check_pretrained_weights_file``).

2. Is nnU-Net's predictor building the network? (:func:`called_from_nnunet_inference`)
--------------------------------------------------------------------------------------
A trainer whose network does not segment (the localisation pretraining regresses one point per patch) must refuse
``nnUNetv2_predict`` with an explanation. Without a refusal the predictor would build the localiser, load its
weights and fail only inside its sliding-window code, on an output of shape (B, ndim) where it expects
segmentation logits. The only trainer code nnU-Net's predictor runs is the static
``build_network_architecture`` (``nnUNetPredictor.initialize_from_trained_model_folder`` finds the trainer class by
name and calls it on the class), with the same arguments training passes (deep supervision aside, which such a
trainer turns off anyway), and the predictor has no option, callback or environment variable that marks inference:
nnU-Net documents no hook for this. So the builder asks who calls it: a frame of a module in ``nnunetv2.inference``
(the predictor and every ``nnUNetv2_predict*`` entry point live there) on the call stack means inference. Telling
the two calls apart by instance vs class access (a descriptor) was rejected: code outside nnU-Net, tests included,
calls ``build_network_architecture`` on the class to build the localiser. Walking frames reads
``sys._getframe`` (CPython and PyPy provide it) and runs once per network build.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "NNUNET_TRAIN_ARGUMENTS", "nnunet_train_parser", "parse_nnunet_train_argv", "pretrained_weights_argument",
    "NNUNET_INFERENCE_PACKAGE", "called_from_nnunet_inference",
]

# ------------------------------------------------------------------------------------------------------------------
# 1. nnUNetv2_train's command line
# ------------------------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------------------------
# 2. nnU-Net's predictor as the caller
# ------------------------------------------------------------------------------------------------------------------

#: package of nnU-Net's predictor and of every ``nnUNetv2_predict*`` entry point
NNUNET_INFERENCE_PACKAGE = "nnunetv2.inference"


def called_from_nnunet_inference() -> bool:
    """True when a function of :data:`NNUNET_INFERENCE_PACKAGE` is on the call stack (see the module docstring)."""
    frame = sys._getframe(1)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(NNUNET_INFERENCE_PACKAGE):
            return True
        frame = frame.f_back
    return False
