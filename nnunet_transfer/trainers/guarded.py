"""The base of every trainer we ship: refuses a ``-pretrained_weights`` file that could run code.

nnU-Net's ``-pretrained_weights`` loader unpickles the file fully (``torch.load(weights_only=False)``), so a
booby-trapped checkpoint runs its payload the moment nnU-Net loads it. :class:`GuardedTrainer` checks that file in
its constructor, before nnU-Net's ``run_training`` gets to ``initialize()`` and then to its loader: the file must
load with ``torch.load(weights_only=True)`` (tensors, plain containers and numpy numbers only: a pickle that this
restricted unpickler accepts references no other Python object, so nnU-Net's full unpickle runs no foreign code).
The path is read from the command line exactly as nnU-Net's parser reads it
(:mod:`nnunet_transfer.trainers.nnunet_invocation`), whatever the spelling.

Every trainer in :mod:`nnunet_transfer.trainers` derives from it (``tests/test_untrusted_files.py`` checks this).

It also places a DDP rank on its own device (:mod:`nnunet_transfer.trainers.ddp_placement`): the node-local GPU
under ``torchrun`` on several nodes, or the CPU (gloo), where nnU-Net's trainer assumes one node of GPUs.
Limit: the check sees ``nnUNetv2_train``'s command line (also in DDP worker processes, which inherit it); a
Python program that calls ``nnunetv2.run.run_training.run_training(pretrained_weights=...)`` itself must check its
file first with :func:`check_pretrained_weights_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_transfer.pretrained.safe_load import read_torch_file_data_only
from nnunet_transfer.trainers.ddp_placement import ddp_device, initialize_with_ddp_on
from nnunet_transfer.trainers.nnunet_invocation import pretrained_weights_argument

__all__ = ["GuardedTrainer", "check_pretrained_weights_file", "check_command_line_pretrained_weights"]


def check_pretrained_weights_file(path: Union[str, Path]) -> None:
    """Raise (naming the file and the fix) unless ``path`` loads as plain data, as nnU-Net's loader will read it.

    Reads with ``torch.load`` whatever the suffix, because nnU-Net's loader does too.
    """
    read_torch_file_data_only(path)


def check_command_line_pretrained_weights(argv: Optional[Sequence[str]] = None) -> Optional[str]:
    """Check the file nnU-Net's parser takes from ``-pretrained_weights`` on this command line; return it (or
    None when there is none)."""
    path = pretrained_weights_argument(argv)
    if path is not None:
        check_pretrained_weights_file(path)
    return path


class GuardedTrainer(nnUNetTrainer):
    """``nnUNetTrainer`` that refuses an unsafe ``-pretrained_weights`` file before nnU-Net can unpickle it."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        #: the ``-pretrained_weights`` file of this run (checked), or None
        self.pretrained_weights_file: Optional[str] = check_command_line_pretrained_weights()
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.is_ddp:
            # nnU-Net puts rank r on cuda:r; the rank's own device is the node-local GPU, or the CPU when asked
            self.device = ddp_device(device)
            if self.device.type != "cuda":
                self.grad_scaler = None

    def initialize(self) -> None:
        """nnU-Net's ``initialize``; under DDP the network is wrapped for this rank's device (see
        :func:`~nnunet_transfer.trainers.ddp_placement.initialize_with_ddp_on`)."""
        if self.is_ddp:
            initialize_with_ddp_on(self, super().initialize)
        else:
            super().initialize()
