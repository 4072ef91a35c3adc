"""What nnU-Net's trainer needs from a network that is not one of its own U-Nets.

``nnUNetTrainer.set_deep_supervision_enabled`` sets ``network.decoder.deep_supervision``; the public networks
keep their official parameter names, so they carry a parameter-free ``decoder`` holding only that flag (STU-Net's
own nnU-Net v2 port does the same). Networks with one output say so with ``supports_deep_supervision = False``:
nnunet-transfer's fine-tuning trainers then train them without deep supervision.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

__all__ = ["DeepSupervisionSwitch", "refuse_deep_supervision", "check_fixed_strides", "SWIN_STRIDES"]

#: Swin UNETR's downsampling in nnU-Net's terms: patch embedding by 2, then four patch mergings by 2
SWIN_STRIDES = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))


class DeepSupervisionSwitch(nn.Module):
    """A module without parameters whose ``deep_supervision`` flag nnU-Net's trainer sets."""

    def __init__(self, enabled: bool = False) -> None:
        super().__init__()
        self.deep_supervision = bool(enabled)


def refuse_deep_supervision(network_name: str, deep_supervision: bool) -> None:
    """Raise when a single-output network is asked for deep-supervision outputs (nnU-Net's stock trainer does)."""
    if deep_supervision:
        raise ValueError(f"{network_name} has one output and no deep supervision; train it with an nnunet-transfer "
                         "fine-tuning trainer (-tr FineTuneTrainer), which turns deep supervision off for it")


def check_fixed_strides(network_name: str, fixed: Sequence[Sequence[int]], given: Sequence[Sequence[int]]) -> None:
    """Raise when plans give another downsampling than the one the network is built with."""
    if [list(map(int, s)) for s in given] != [list(s) for s in fixed]:
        raise ValueError(f"{network_name} downsamples by {[list(s) for s in fixed]} (fixed); the plans give "
                         f"{[list(s) for s in given]}")
