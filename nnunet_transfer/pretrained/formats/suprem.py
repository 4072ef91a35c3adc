"""SuPreM releases (MrGiovanni/SuPreM: ``supervised_suprem_{unet,swinunetr,segresnet}_2100.pth``).

SuPreM trains its backbones inside the CLIP-Driven Universal Model and saves the whole DDP model:
``{"net": {"module.backbone.<backbone key>", "module.precls_conv.*", "module.GAP.*", "module.controller.*",
"module.organ_embedding", "module.text_to_vision.*"}, "optimizer", "scheduler", "epoch"}``; the backbone is Models
Genesis' UNet3D or MONAI's Swin UNETR (v1, feature size 48). SegResNet is trained on its own: ``{"net":
{"module.<SegResNet key>"}}``. SuPreM's fine-tuning code loads the backbone only; so does this reader: the
language-driven head (precls_conv, GAP, controller, organ embedding) and the backbone's own output layer (``out``,
``out_tr``, SegResNet's ``conv_final.2``) are filtered out and listed.

:func:`read_universal_layout` is shared with the Universal Model's reader (:mod:`.universal_model`), whose files
have the same layout.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading
from nnunet_transfer.pretrained.formats.released_layouts import (first_key_with, never_raises, split_filtered,
                                                                 strip_prefixes, unwrap_state_dict)

#: backbone key prefixes of each network, and the prefixes of its own output layer (filtered as a task head)
BACKBONES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "unet3d": (("down_tr", "up_tr", "out_tr."), ("out_tr.",)),
    "swinunetr": (("swinViT.", "encoder", "decoder", "out."), ("out.",)),
    "segresnet": (("convInit.", "down_layers.", "up_layers.", "up_samples.", "conv_final."), ("conv_final.2.",)),
}


def universal_state(obj: Any) -> Optional[Dict[str, torch.Tensor]]:
    """The state dict of a ``{"net": ...}`` file with ``module.`` removed, or None."""
    state = unwrap_state_dict(obj, ("net",), flat=False)
    return None if state is None else strip_prefixes(state, ("module.", "_orig_mod."))


def backbone_kind(state: Dict[str, torch.Tensor]) -> Optional[str]:
    """``unet3d``, ``swinunetr`` or ``segresnet`` from the keys (with or without ``backbone.``), or None."""
    for kind, key in (("unet3d", "down_tr64.ops.0.conv1.weight"), ("swinunetr", "swinViT.patch_embed.proj.weight"),
                      ("segresnet", "convInit.conv.weight")):
        if key in state or f"backbone.{key}" in state:
            return kind
    return None


def read_universal_layout(state: Dict[str, torch.Tensor], family: str) -> FormatReading:
    """The backbone of a Universal-Model-layout state dict (see the module docstring)."""
    kind = backbone_kind(state)
    if first_key_with(state, "backbone."):
        backbone = strip_prefixes({k: v for k, v in state.items() if k.startswith("backbone.")}, ("backbone.",))
        others = sorted(k for k in state if not k.startswith("backbone."))
    else:  # the backbone's keys at the top level (SegResNet; some Universal Model files)
        prefixes = BACKBONES[kind][0]
        backbone = {k: v for k, v in state.items() if k.startswith(prefixes)}
        others = sorted(k for k in state if k not in backbone)
    tensors, head = split_filtered(backbone, lambda k: k.startswith(BACKBONES[kind][1]))
    if kind == "swinunetr":
        architecture = "swinunetr-v2" if first_key_with(tensors, "swinViT.layers1c.") else "swinunetr"
        first = tensors["swinViT.patch_embed.proj.weight"]
    else:
        architecture = {"unet3d": "suprem-unet", "segresnet": "segresnet"}[kind]
        first = tensors["down_tr64.ops.0.conv1.weight" if kind == "unet3d" else "convInit.conv.weight"]
    notes = [f"{family} {kind} backbone: {len(tensors)} tensors; filtered out: {len(head)} of the backbone's output "
             f"layer, {len(others)} of the language-driven head"
             + (f" ({', '.join(sorted({k.split('.')[0] for k in others}))})" if others else "")]
    metadata = {"architecture": architecture, "input_channels": int(first.shape[1]), "backbone": kind}
    if kind == "segresnet" and int(first.shape[0]) != 16:
        metadata["init_filters"] = int(first.shape[0])
        notes.append(f"SegResNet with {int(first.shape[0])} initial filters: plan-arch's segresnet has 16 (SuPreM's "
                     f"release); set init_filters {int(first.shape[0])} in the plans' arch_kwargs for this file")
    if "organ_embedding" in state:
        metadata["organs"] = int(state["organ_embedding"].shape[0])
    return FormatReading(tensors, [*head, *others], notes, None, metadata)


def detect(obj: Any) -> bool:
    state = universal_state(obj)
    if state is None:
        return False
    return first_key_with(state, "backbone.down_tr64.", "backbone.swinViT.") or "convInit.conv.weight" in state


def read(obj: Any, source: str) -> FormatReading:
    return read_universal_layout(universal_state(obj), "SuPreM")


FORMAT = CheckpointFormat("suprem", "SuPreM", never_raises(detect), read)
