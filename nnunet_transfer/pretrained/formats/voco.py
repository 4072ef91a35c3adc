"""VoCo releases (Luffy03/VoCo, e.g. ``VoCo_10k.pt``): the self-supervised Swin UNETR **v2**
encoder as a flat state dict.

Keys: ``swinViT.*`` (with the v2 residual blocks ``swinViT.layers{1..4}c``) and ``encoder1..4``, ``encoder10``; files
differ in ``module.`` and ``backbone.`` prefixes, ``swin_vit`` for ``swinViT`` (VoCo's own fine-tuning code fixes
both), a ``state_dict`` wrapper, and a whole pretraining model (``student.``/``teacher.``, ``proj_head``). The reader
keeps the student's encoder; the teacher (an EMA copy) and the projection head are filtered out. The architecture is
``swinunetr-v2`` (a v1 network leaves the ``layers{i}c`` blocks unloaded); the feature size is read from the patch
embedding (B 48, L 96, H 192).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading
from nnunet_transfer.pretrained.formats.released_layouts import (first_key_with, never_raises, split_filtered,
                                                                 strip_prefixes, unwrap_state_dict)

PATCH_EMBED = "swinViT.patch_embed.proj.weight"
#: keys of other models that a VoCo file never has (the Universal Model's language-driven head)
_NOT_VOCO = ("controller.", "organ_embedding", "precls_conv.")


def _state(obj: Any) -> Optional[Dict[str, torch.Tensor]]:
    state = unwrap_state_dict(obj, ("state_dict", "model"))
    if state is None:
        return None
    state = {k.replace("swin_vit", "swinViT"): v for k, v in state.items()}
    state = strip_prefixes(state, ("module.", "backbone.", "_orig_mod."))
    if first_key_with(state, "student."):
        state = {k: v for k, v in state.items() if not k.startswith("student.")} | \
            strip_prefixes({k: v for k, v in state.items() if k.startswith("student.")}, ("student.",))
    return state


def detect(obj: Any) -> bool:
    if isinstance(obj, dict) and "net" in obj:  # the Universal Model's / SuPreM's wrapper
        return False
    state = _state(obj)
    return state is not None and PATCH_EMBED in state and not first_key_with(state, *_NOT_VOCO)


def read(obj: Any, source: str) -> FormatReading:
    tensors, filtered = split_filtered(_state(obj), lambda k: k.startswith(("teacher.", "proj_head.", "out.")))
    v2 = first_key_with(tensors, "swinViT.layers1c.")
    feature_size = int(tensors[PATCH_EMBED].shape[0])
    notes = [f"VoCo Swin UNETR {'v2' if v2 else 'v1'} encoder (feature size {feature_size}): {len(tensors)} tensors; "
             f"{len(filtered)} filtered out (EMA teacher, projection head)"]
    if feature_size != 48:
        notes.append(f"feature size {feature_size}: plan-arch's swinunetr-v2 has 48 (VoCo-B); set feature_size "
                     f"{feature_size} in the plans' arch_kwargs for this file")
    return FormatReading(tensors, filtered, notes, None,
                         {"architecture": "swinunetr-v2" if v2 else "swinunetr", "feature_size": feature_size,
                          "input_channels": int(tensors[PATCH_EMBED].shape[1])})


FORMAT = CheckpointFormat("voco", "VoCo", never_raises(detect), read)
