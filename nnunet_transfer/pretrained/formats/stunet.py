"""STU-Net releases: nnU-Net v1 ``.model`` files (``{"state_dict", "optimizer_state_dict", "plot_stuff", ...}``,
next to a ``.model.pkl`` with the v1 plans), or the nnU-Net v2 port's ``{"network_weights", ...}``.

Keys are STU-Net's own (``conv_blocks_context.<stage>.<block>.conv1``, ``upsample_layers``,
``conv_blocks_localization``, ``seg_outputs``), not nnU-Net v1's ``Generic_UNet`` names, so this reader must be
tried before the nnU-Net family's. The ``.model.pkl`` is read as nnU-Net v1's companion file (data only), so the
plans come with the weights. The size (S/B/L/H) is read from the first convolution's channels; the task heads
``seg_outputs`` are filtered out (STU-Net's own fine-tuning skips them too).
"""

from __future__ import annotations

from typing import Any, Optional

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading
from nnunet_transfer.pretrained.formats.nnunet_v1 import read_v1_companion
from nnunet_transfer.pretrained.formats.released_layouts import (never_raises, split_filtered, strip_prefixes,
                                                                 unwrap_state_dict)

FIRST_CONV = "conv_blocks_context.0.0.conv1.weight"
#: first-stage channels -> STU-Net size
SIZES = {16: "s", 32: "b", 64: "l", 96: "h"}


def _state(obj: Any) -> Optional[dict]:
    state = unwrap_state_dict(obj, ("state_dict", "network_weights"))
    return None if state is None else strip_prefixes(state, ("module.", "_orig_mod."))


def detect(obj: Any) -> bool:
    state = _state(obj)
    return state is not None and FIRST_CONV in state


def read(obj: Any, source: str) -> FormatReading:
    state = _state(obj)
    channels = int(state[FIRST_CONV].shape[0])
    size = SIZES.get(channels)
    tensors, filtered = split_filtered(state, lambda k: k.startswith("seg_outputs."))
    notes = [f"STU-Net{'-' + size.upper() if size else ''} ({channels} channels in the first stage): "
             f"{len(filtered)} task-head tensors (seg_outputs) filtered out"]
    if size is None:
        notes.append(f"no released STU-Net size has {channels} first-stage channels (S 16, B 32, L 64, H 96)")
    metadata = {"architecture": f"stunet-{size}" if size else None, "input_channels": int(state[FIRST_CONV].shape[1])}
    return FormatReading(tensors, filtered, notes, None, metadata)


#: the ``.model.pkl`` next to a v1 ``.model`` holds the v1 plans (read as data, as for nnU-Net v1's own files)
FORMAT = CheckpointFormat("stunet", "STU-Net", never_raises(detect), read, companion=read_v1_companion)
