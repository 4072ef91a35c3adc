"""CLIP-Driven Universal Model releases (ljwztc/CLIP-Driven-Universal-Model: ``clip_driven_universal_unet.pth``,
``clip_driven_universal_swin_unetr.pth``).

Same layout as SuPreM's files (SuPreM grew out of this code): ``{"net": {"module.backbone.*" or "module.swinViT.*",
"module.precls_conv.*", "module.GAP.*", "module.controller.*", "module.organ_embedding", "module.text_to_vision.*"},
...}``, the backbone being Models Genesis' UNet3D or Swin UNETR v1 (feature size 48). The released Swin UNETR file
keeps the backbone at the top level (``pred_pseudo.py`` adds ``backbone.`` to ``swinViT``/``encoder``/``decoder``
keys when loading it). Recognised by the language-driven head over the Universal Model's 32 classes, or by a
backbone at the top level next to it; read as :func:`~.suprem.read_universal_layout` reads SuPreM's.
"""

from __future__ import annotations

from typing import Any

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading
from nnunet_transfer.pretrained.formats.released_layouts import first_key_with, never_raises
from nnunet_transfer.pretrained.formats.suprem import backbone_kind, read_universal_layout, universal_state

#: classes of the Universal Model's organ embedding (its NUM_CLASS)
UNIVERSAL_CLASSES = 32


def detect(obj: Any) -> bool:
    state = universal_state(obj)
    if state is None or "controller.weight" not in state or backbone_kind(state) in (None, "segresnet"):
        return False
    embedding = state.get("organ_embedding")
    top_level = not first_key_with(state, "backbone.")
    return top_level or (embedding is not None and int(embedding.shape[0]) == UNIVERSAL_CLASSES)


def read(obj: Any, source: str) -> FormatReading:
    return read_universal_layout(universal_state(obj), "CLIP-Driven Universal Model")


FORMAT = CheckpointFormat("universal-model", "CLIP-Driven Universal Model", never_raises(detect), read)
