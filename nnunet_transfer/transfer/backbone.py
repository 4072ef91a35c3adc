"""Loading the backbone of a released public model into a network, and saying which of its tensors did not load.

A format reader (:mod:`nnunet_transfer.pretrained.formats`) turns a released file into the backbone's tensors, named
as the family's own network names them. :func:`load_backbone` loads them with :func:`~.weights.transfer_weights`
(the per-tensor report of the network's side: loaded, adapted, new, skipped) and adds the checkpoint's side: every
backbone tensor that did not load, with the reason (no counterpart in this network, another shape). Into the
family's own architecture all of it loads; into another network what matches loads and the rest is listed, e.g.
VoCo's Swin UNETR v2 blocks (``swinViT.layers{i}c``) in a v1 network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence

import torch
from torch import nn

from nnunet_transfer.transfer.weights import TransferReport, transfer_weights

__all__ = ["BackboneTransfer", "load_backbone", "MIN_BACKBONE_FRACTION"]

#: share of a family's backbone tensors that must load into its own architecture
MIN_BACKBONE_FRACTION = 0.95


@dataclass
class BackboneTransfer:
    """The transfer report plus the checkpoint side: which backbone tensors loaded and which did not, and why."""

    family: str
    report: TransferReport
    offered: List[str]
    not_loaded: Dict[str, str] = field(default_factory=dict)
    filtered: List[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """Share of the offered backbone tensors that loaded (adapted ones included)."""
        return (len(self.offered) - len(self.not_loaded)) / len(self.offered) if self.offered else 0.0

    def summary(self) -> str:
        return (f"{self.family}: {len(self.offered) - len(self.not_loaded)} of {len(self.offered)} backbone tensors "
                f"loaded ({100 * self.fraction:.1f}%), {len(self.filtered)} filtered out as not backbone")

    def __str__(self) -> str:
        lines = [self.summary(), str(self.report)]
        if self.not_loaded:
            lines.append(f"backbone tensors not loaded ({len(self.not_loaded)}):")
            lines += [f"  {key}: {why}" for key, why in list(self.not_loaded.items())[:20]]
            if len(self.not_loaded) > 20:
                lines.append(f"  ... (+{len(self.not_loaded) - 20})")
        return "\n".join(lines)


def load_backbone(network: nn.Module, tensors: Mapping[str, torch.Tensor], *, family: str, source: str,
                  filtered: Sequence[str] = (), head_patterns: Sequence[str] = ()) -> BackboneTransfer:
    """Load ``tensors`` (a reader's backbone) into ``network``; report both sides (see the module docstring).

    ``head_patterns``: network keys that are new by design (the task head), reported as re-initialised; by default
    the network's ``head_prefixes``.
    """
    heads = tuple(head_patterns) or tuple(getattr(network, "head_prefixes", ()))
    with torch.no_grad():
        report = transfer_weights(network, dict(tensors), exclude=(), head_patterns=heads, source_name=source)
    loaded = set(report.loaded)
    mismatched = {k: (cs, ms) for k, cs, ms in report.shape_mismatched}
    unexpected = set(report.unexpected)
    surplus = set(report.surplus)
    not_loaded: Dict[str, str] = {}
    for key in tensors:
        if key in loaded:
            continue
        if key in mismatched:
            cs, ms = mismatched[key]
            reason = report.mismatch_reasons.get(key, "shapes differ")
            not_loaded[key] = f"checkpoint {list(cs)} vs network {list(ms)} ({reason})"
        elif key in surplus:
            not_loaded[key] = "a stage this network does not have"
        elif key in unexpected or key not in network.state_dict():
            not_loaded[key] = "no tensor of this name in the network"
        else:
            not_loaded[key] = "not loaded"
    return BackboneTransfer(family, report, list(tensors), not_loaded, list(filtered))
