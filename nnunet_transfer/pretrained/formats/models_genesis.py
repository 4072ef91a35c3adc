"""Models Genesis releases (``Genesis_Chest_CT.pt``): ``{"state_dict": {"module.<UNet3D key>": ...}, ...}``.

The keys are those of its ``UNet3D`` (``down_tr64.ops.0.conv1.weight`` ...). Models Genesis fine-tunes the whole
encoder-decoder; only ``out_tr`` (the one-channel restoration output of the pretext task) is filtered out. SuPreM and
the Universal Model ship the same network under ``backbone.``: those files are theirs (see :mod:`.suprem`).
"""

from __future__ import annotations

from typing import Any, Optional

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading
from nnunet_transfer.pretrained.formats.released_layouts import (never_raises, split_filtered, strip_prefixes,
                                                                 unwrap_state_dict)

FIRST_CONV = "down_tr64.ops.0.conv1.weight"


def _state(obj: Any) -> Optional[dict]:
    state = unwrap_state_dict(obj, ("state_dict",))
    return None if state is None else strip_prefixes(state, ("module.", "_orig_mod."))


def detect(obj: Any) -> bool:
    state = _state(obj)
    return state is not None and FIRST_CONV in state


def read(obj: Any, source: str) -> FormatReading:
    tensors, filtered = split_filtered(_state(obj), lambda k: k.startswith("out_tr."))
    note = (f"Models Genesis UNet3D: {len(tensors)} encoder-decoder tensors; {len(filtered)} tensors of the "
            "restoration output (out_tr) filtered out")
    return FormatReading(tensors, filtered, [note], None,
                         {"architecture": "genesis-unet3d", "input_channels": int(tensors[FIRST_CONV].shape[1])})


FORMAT = CheckpointFormat("models-genesis", "Models Genesis", never_raises(detect), read)
