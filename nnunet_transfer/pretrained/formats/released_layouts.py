"""Shared pieces of the readers of released public models (STU-Net, Models Genesis, SuPreM, Universal Model, VoCo,
DoDNet): finding the state dict inside the dict the project saved, removing its prefixes, and splitting off the
tensors that are not part of the transferable backbone.

Each project wraps and prefixes differently (learned from their own save and load code):

- Models Genesis ``{"state_dict": {"module.<UNet3D key>": ...}, "optimizer_state_dict": ...}``;
- SuPreM and the Universal Model ``{"net": {"module.backbone.<backbone key>", "module.controller.*", ...},
  "optimizer", "scheduler", "epoch"}`` (SuPreM's SegResNet: ``{"net": {"module.<SegResNet key>"}}``);
- VoCo a flat state dict (``swinViT.*``, ``encoder1..10.*``; some files ``module.``/``backbone.`` prefixed, ``swin_vit``
  for ``swinViT``);
- DoDNet a flat ``module.``-prefixed state dict (``{"model": ...}`` when saved with its optimiser);
- STU-Net nnU-Net v1's ``{"state_dict", "optimizer_state_dict", "plot_stuff", ...}`` (v2 port: ``network_weights``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from nnunet_transfer.pretrained.safe_load import CheckpointFormatError, strip_key_prefixes

__all__ = ["unwrap_state_dict", "strip_prefixes", "split_filtered", "first_key_with", "never_raises"]

#: the dicts released files keep their weights in, tried in this order
CONTAINERS: Tuple[str, ...] = ("state_dict", "net", "network_weights", "model")


def unwrap_state_dict(obj: Any, containers: Sequence[str] = CONTAINERS,
                      flat: bool = True) -> Optional[Dict[str, torch.Tensor]]:
    """The ``{name: tensor}`` dict in ``obj`` (under one of ``containers``, or with ``flat`` ``obj`` itself); None
    when there is none.

    Non-tensor entries of a state dict (none in these releases) make it not a state dict.
    """
    if not isinstance(obj, Mapping):
        return None
    for key in containers:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return {str(k): v for k, v in inner.items()}
    if flat and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return dict(obj)
    return None


def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: Iterable[str],
                   source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """Remove any of ``prefixes`` from the start of every key, repeatedly (``module.backbone.x`` -> ``x``); see
    :func:`~nnunet_transfer.pretrained.safe_load.strip_key_prefixes`."""
    return strip_key_prefixes(state, prefixes, source)


def split_filtered(state: Mapping[str, torch.Tensor], drop: Callable[[str], bool]
                   ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """``(kept tensors, sorted names of the dropped ones)``."""
    kept = {k: v for k, v in state.items() if not drop(k)}
    return kept, sorted(k for k in state if drop(k))


def first_key_with(state: Mapping[str, Any], *prefixes: str) -> bool:
    """True when some key starts with one of ``prefixes``."""
    return any(k.startswith(prefixes) for k in state)


def never_raises(detect: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """A ``detect`` that answers False for an object its checks cannot read (the registry's contract)."""
    def guarded(obj: Any) -> bool:
        try:
            return bool(detect(obj))
        except (CheckpointFormatError, AttributeError, TypeError, IndexError):
            return False
    guarded.__doc__ = detect.__doc__
    return guarded
