"""The base of every trainer we ship: a ``-pretrained_weights`` file is read once, checked as data, and only those
bytes count.

nnU-Net's ``-pretrained_weights`` loader unpickles the file fully (``torch.load(weights_only=False)``), so a
booby-trapped checkpoint runs its payload the moment nnU-Net loads it. :class:`GuardedTrainer` reads that file once
in its constructor, before nnU-Net's ``run_training`` gets to ``initialize()`` and then to its loader: the bytes must
load with ``torch.load(weights_only=True)`` (tensors, plain containers and numpy numbers only), and the result is
kept as :attr:`GuardedTrainer.pretrained_source` (sha256, format, tensors) for everything the run does with it.
The path is read from the command line exactly as nnU-Net's parser reads it
(:mod:`nnunet_transfer.trainers.nnunet_invocation`), whatever the spelling.

Every trainer in :mod:`nnunet_transfer.trainers` derives from it (``tests/test_untrusted_files.py`` checks this).
Limit: the check sees ``nnUNetv2_train``'s command line (also in DDP worker processes, which inherit it); a
Python program that calls ``nnunetv2.run.run_training.run_training(pretrained_weights=...)`` itself must check its
file first with :func:`check_pretrained_weights_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_transfer.pretrained.formats.base import SourceWeights
from nnunet_transfer.pretrained.source import read_torch_checkpoint_once
from nnunet_transfer.trainers.nnunet_invocation import pretrained_weights_argument

__all__ = ["GuardedTrainer", "check_pretrained_weights_file", "check_command_line_pretrained_weights"]


def check_pretrained_weights_file(path: Union[str, Path]) -> SourceWeights:
    """Read ``path`` once and return it as source weights; raise (naming the file and the fix) unless it loads as
    plain data, as nnU-Net's loader will read it (``torch.load`` whatever the suffix)."""
    return read_torch_checkpoint_once(path)


def check_command_line_pretrained_weights(argv: Optional[Sequence[str]] = None) -> Optional[SourceWeights]:
    """The file nnU-Net's parser takes from ``-pretrained_weights`` on this command line, read once and checked (or
    None when there is none)."""
    path = pretrained_weights_argument(argv)
    return None if path is None else check_pretrained_weights_file(path)


class GuardedTrainer(nnUNetTrainer):
    """``nnUNetTrainer`` that reads a ``-pretrained_weights`` file once and refuses it unless it is plain data."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        #: the ``-pretrained_weights`` checkpoint of this run, read once and checked, or None
        self.pretrained_source: Optional[SourceWeights] = check_command_line_pretrained_weights()
        super().__init__(plans, configuration, fold, dataset_json, device)

    @property
    def pretrained_weights_file(self) -> Optional[str]:
        """The ``-pretrained_weights`` path of this run (already read; never opened again by us), or None."""
        return None if self.pretrained_source is None else self.pretrained_source.source
