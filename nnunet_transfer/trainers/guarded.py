"""The base of every trainer we ship: a ``-pretrained_weights`` file is read once, checked as data, and only those
bytes count; nothing a run loads is unpickled as code.

nnU-Net's ``-pretrained_weights`` loader unpickles the file fully (``torch.load(weights_only=False)``), so a
booby-trapped checkpoint runs its payload the moment nnU-Net loads it. :class:`GuardedTrainer` reads that file once
in its constructor, before nnU-Net's ``run_training`` gets to ``initialize()`` and then to its loader: the bytes must
load with ``torch.load(weights_only=True)`` (tensors, plain containers and numpy numbers only), and the result is
kept as :attr:`GuardedTrainer.pretrained_source` (sha256, format, tensors) for everything the run does with it.
nnU-Net's loader still opens the path itself afterwards (``nnunetv2.run.load_pretrained_weights``, a module function
no trainer hook reaches), so the trainer switches torch's own ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` on for the process:
a file swapped for a booby trap after our check is read as data by nnU-Net too, and refused; the fine-tuning
trainers then put the checked tensors back (:class:`~nnunet_transfer.trainers.finetune.FineTuneTrainer`).
``--c`` goes through :meth:`GuardedTrainer.load_checkpoint`, nnU-Net's hook, which reads ``checkpoint_latest.pth``
(or final/best) with ``weights_only`` (numpy numbers of nnU-Net's training log allowed).
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

import pickle
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_transfer.pretrained.formats.base import SourceWeights
from nnunet_transfer.pretrained.safe_load import force_weights_only_loads, unpickling_refusal, weights_only_loads
from nnunet_transfer.pretrained.source import read_torch_checkpoint_once
from nnunet_transfer.trainers.checkpoint_argument import call_with_checkpoint, checkpoint_from_call
from nnunet_transfer.trainers.ddp_placement import ddp_device, initialize_with_ddp_on
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
        if self.pretrained_source is not None:
            force_weights_only_loads()  # nnU-Net re-opens the path: whatever it holds then, it is read as data
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

    @property
    def pretrained_weights_file(self) -> Optional[str]:
        """The ``-pretrained_weights`` path of this run (already read; never opened again by us), or None."""
        return None if self.pretrained_source is None else self.pretrained_source.source

    def load_checkpoint(self, *args, **kwargs) -> None:
        """nnU-Net's checkpoint loading (``--c``, ``--val``), reading the file with ``weights_only``, under either name
        of its argument (``filename_or_checkpoint`` in 2.8.x, ``checkpoint`` on nnU-Net master)."""
        checkpoint = checkpoint_from_call(args, kwargs)
        try:
            with weights_only_loads():
                return call_with_checkpoint(super().load_checkpoint, checkpoint)
        except pickle.UnpicklingError as exc:
            name = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "the checkpoint given"
            raise unpickling_refusal(name, exc) from exc
