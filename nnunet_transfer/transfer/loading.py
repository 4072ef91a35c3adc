"""Loading named tensors into a network: what matches by name and shape goes in, the rest is reported.

The generic step under every transfer (:mod:`nnunet_transfer.transfer.weights` builds on it):

- :func:`load_matching` loads what matches into a module and returns a :class:`LoadReport`;
- :func:`adapt_input_channels` turns a first-conv kernel pretrained for C input channels into one for C';
- :func:`checked_cast` refuses integer, boolean and non-finite values for floating-point network tensors.

The tensors come from :mod:`nnunet_transfer.pretrained`, which reads checkpoints without knowing any network.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError

__all__ = ["LoadReport", "TensorAdapter", "adapt_input_channels", "checked_cast", "load_matching"]

#: ``fn(checkpoint_tensor, model_tensor) -> (adapted_tensor, note)``: makes a checkpoint tensor fit the model.
TensorAdapter = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, str]"]


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-layer conv kernel ``(out, C, *k)`` to ``in_channels`` input channels.

    Same convention as timm's ``adapt_input_conv``: going to one channel sums the pretrained channels;
    otherwise the kernel is tiled over channels (cut to ``in_channels``) and scaled by ``C / in_channels``,
    so a constant input image produces the same first-layer response as before.
    """
    c = weight.shape[1]
    if in_channels == c:
        return weight.clone()
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_channels / c)
    tiled = weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :in_channels]
    return tiled * (c / in_channels)


@dataclass
class LoadReport:
    """What happened when a foreign state dict was loaded into a module.

    ``loaded``: model keys that received checkpoint values; ``missing``: model keys the checkpoint lacks
    (left at their initialisation); ``unexpected``: checkpoint keys the model has no place for (ignored);
    ``shape_mismatched``: ``(key, checkpoint_shape, model_shape)`` for keys skipped because the shapes differ;
    ``adapted``: ``(key, note)`` for tensors changed to fit (e.g. first-conv input channels);
    ``skipped``: checkpoint keys deliberately filtered out before loading (e.g. a segmentation head);
    ``mismatch_reasons``: for a shape-mismatched key, why no adapter made it fit.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    adapted: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mismatch_reasons: dict[str, str] = field(default_factory=dict)
    loaded_parameters: int = 0
    total_parameters: int = 0

    @property
    def n_loaded(self) -> int:
        return len(self.loaded)

    @property
    def n_missing(self) -> int:
        return len(self.missing)

    @property
    def n_unexpected(self) -> int:
        return len(self.unexpected)

    @property
    def n_shape_mismatched(self) -> int:
        return len(self.shape_mismatched)

    @property
    def fraction_loaded(self) -> float:
        """Fraction of the module's trainable parameter count (elements) that came from the checkpoint."""
        return self.loaded_parameters / self.total_parameters if self.total_parameters else 0.0

    @property
    def complete(self) -> bool:
        """True when every model tensor was loaded and nothing was left over or mismatched."""
        return not (self.missing or self.unexpected or self.shape_mismatched)

    def count_rows(self) -> list[tuple[str, int]]:
        """(label, count) rows of the printed table; subclasses add theirs."""
        return [
            ("loaded (adapted included)", self.n_loaded),
            ("missing (kept init)", self.n_missing),
            ("unexpected (ignored)", self.n_unexpected),
            ("shape mismatched (skipped)", self.n_shape_mismatched),
            ("adapted", len(self.adapted)),
            ("filtered out", len(self.skipped)),
        ]

    def __str__(self) -> str:
        rows = self.count_rows()
        width = max(len(r[0]) for r in rows)
        lines = [f"weights from {self.source}", f"{'tensors':<{width}}  count", f"{'-' * width}  -----"]
        lines += [f"{name:<{width}}  {n:5d}" for name, n in rows]
        lines.append(f"parameters loaded: {self.loaded_parameters:,} / {self.total_parameters:,} "
                     f"({100.0 * self.fraction_loaded:.1f}%)")
        for key, note in self.adapted:
            lines.append(f"adapted {key}: {note}")
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... (+{len(keys) - 8})" if len(keys) > 8 else "")
                lines.append(f"{title}: {shown}")
        for key, cs, ms in self.shape_mismatched[:8]:
            reason = self.mismatch_reasons.get(key)
            lines.append(f"shape mismatch {key}: checkpoint {list(cs)} vs model {list(ms)}"
                         + (f" ({reason})" if reason else ""))
        return "\n".join(lines)


def load_matching(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str,
                  strict_shapes: bool = True,
                  adapters: Mapping[str, TensorAdapter] | None = None,
                  skipped: Iterable[str] = ()) -> LoadReport:
    """Load the entries of ``state_dict`` whose names and shapes match ``module``; report the rest.

    ``adapters`` maps a model key to ``fn(checkpoint_tensor, model_tensor) -> (new_tensor, note)``, applied
    when the shapes differ (e.g. :func:`adapt_input_channels` for the first conv); when the tensor it returns still
    does not fit, the note is recorded as the reason in ``mismatch_reasons``. With ``strict_shapes``
    any remaining shape mismatch raises ``ValueError`` listing them; otherwise they are skipped and
    reported. Missing and unexpected keys never raise here: callers decide what is acceptable.
    """
    adapters = dict(adapters or {})
    model_state = module.state_dict()
    report = LoadReport(source=source, skipped=list(skipped))
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key not in model_state:
            report.unexpected.append(key)
            continue
        target = model_state[key]
        checkpoint_shape = tuple(value.shape)
        note = None
        if checkpoint_shape != tuple(target.shape) and key in adapters:
            value, note = adapters[key](value, target)
        if tuple(value.shape) != tuple(target.shape):
            report.shape_mismatched.append((key, checkpoint_shape, tuple(target.shape)))
            if note:
                report.mismatch_reasons[key] = note
            continue
        if note is not None:
            report.adapted.append((key, note))
        to_load[key] = checked_cast(key, value, target, source)
    if strict_shapes and report.shape_mismatched:
        listing = "; ".join(f"{k}: checkpoint {list(c)} vs model {list(m)}" for k, c, m in report.shape_mismatched[:5])
        raise InvalidValueError(
            f"{source}: {len(report.shape_mismatched)} tensors have shapes that do not fit the network "
            f"({listing}). Build the network that matches the checkpoint, or pass strict_shapes=False to "
            f"skip these tensors and keep their initialisation."
        )
    result = module.load_state_dict(to_load, strict=False)
    if result.unexpected_keys:  # cannot happen: we only pass keys of the module
        raise RuntimeError(f"{source}: unexpected keys after filtering: {result.unexpected_keys}")
    report.loaded = [k for k in model_state if k in to_load]
    report.missing = [k for k in model_state if k not in to_load and not _is_shape_mismatched(report, k)]
    params = dict(module.named_parameters())
    report.total_parameters = sum(p.numel() for p in params.values())
    report.loaded_parameters = sum(p.numel() for k, p in params.items() if k in to_load)
    return report


def checked_cast(key: str, value: torch.Tensor, target: torch.Tensor, source: str) -> torch.Tensor:
    """``value`` in ``target``'s dtype; refuses (naming the tensor) what would silently corrupt the network.

    Refused: integer or boolean values for a floating-point tensor, and NaN/inf values. A floating-point value of
    another precision is cast with a warning (float16 -> float32 is exact; float64 -> float32 rounds).
    """
    if value.dtype == target.dtype:
        cast = value
    elif target.is_floating_point() and not value.is_floating_point():
        raise CheckpointFormatError(
            f"{source}: tensor {key!r} holds {value.dtype} values but the network's {key!r} is {target.dtype}; "
            f"a checkpoint of weights holds floating-point tensors",
            fix="check that this is the right file, or re-save the weights as floating point")
    else:
        if target.is_floating_point():
            warnings.warn(f"{source}: tensor {key!r} is {value.dtype}, cast to the network's {target.dtype}",
                          stacklevel=3)
        cast = value.to(dtype=target.dtype)
    if cast.is_floating_point() and not bool(torch.isfinite(cast).all()):
        raise CheckpointFormatError(
            f"{source}: tensor {key!r} contains NaN or infinite values",
            fix="the checkpoint comes from a diverged training or is damaged: use another checkpoint")
    return cast


def _is_shape_mismatched(report: LoadReport, key: str) -> bool:
    return any(k == key for k, _, _ in report.shape_mismatched)


