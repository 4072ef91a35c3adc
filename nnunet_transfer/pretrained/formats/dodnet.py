"""DoDNet releases (jianpengz/DoDNet ``MOTS_DynConv_*.pth``): the ``module.``-prefixed state dict of ``unet3D``
(``torch.save(model.state_dict())``), or ``{"model": ..., "optimizer": ..., "amp": ...}`` when saved for resuming.

Keys: ``conv1``, ``layer0..4``, ``fusionConv``, ``x8_resb``..``x1_resb``, ``precls_conv``, ``GAP``,
``controller``. The dynamic head's kernel generator (``controller``, and ``GAP``, which only feeds it) is
task-specific to the seven MOTS tasks and filtered out; everything else is the backbone of ``dodnet-unet3d``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading
from nnunet_transfer.pretrained.formats.released_layouts import (never_raises, split_filtered, strip_prefixes,
                                                                 unwrap_state_dict)

_MARKERS = ("conv1.weight", "layer0.0.conv1.weight", "x1_resb.0.conv1.weight", "controller.weight")


def _state(obj: Any) -> Optional[Dict[str, torch.Tensor]]:
    state = unwrap_state_dict(obj, ("model", "state_dict"))
    return None if state is None else strip_prefixes(state, ("module.", "_orig_mod."))


def detect(obj: Any) -> bool:
    state = _state(obj)
    return state is not None and all(k in state for k in _MARKERS)


def read(obj: Any, source: str) -> FormatReading:
    state = _state(obj)
    tensors, filtered = split_filtered(state, lambda k: k.startswith(("controller.", "GAP.")))
    tasks = int(state["controller.weight"].shape[1]) - 256  # the controller sees 256 features + the task code
    note = (f"DoDNet unet3D: {len(tensors)} backbone tensors; the dynamic head's kernel generator (controller, GAP; "
            f"{tasks} tasks) filtered out")
    return FormatReading(tensors, filtered, [note], None,
                         {"architecture": "dodnet-unet3d", "input_channels": int(tensors["conv1.weight"].shape[1])})


FORMAT = CheckpointFormat("dodnet", "DoDNet", never_raises(detect), read)
