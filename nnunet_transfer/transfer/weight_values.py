"""The values of weights from elsewhere, checked where they enter (``set-pretrained``, ``extract-encoder``): a weight
is a floating-point tensor with finite values. Integer or boolean tensors where weights belong, and NaN/inf values
(a diverged training, a damaged file), are refused naming the tensor, before anything is recorded or written, not
when training starts."""

from __future__ import annotations

from typing import Mapping

import torch

from nnunet_transfer.errors import InvalidValueError

__all__ = ["INTEGER_BUFFER_NAMES", "check_weight_values"]

#: buffers that are integers in every network that has them (BatchNorm's counter, Swin's relative position index)
INTEGER_BUFFER_NAMES = ("num_batches_tracked", "relative_position_index", "position_ids")


def check_weight_values(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`~nnunet_transfer.errors.InvalidValueError` naming the first tensor of ``tensors`` (read from
    ``source``) that is not floating point (except the known integer buffers) or holds NaN/inf values."""
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise InvalidValueError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor", file=source,
                                    fix="give a checkpoint whose state dict holds tensors only")
        if not (value.is_floating_point() or value.is_complex()):
            if key.rsplit(".", 1)[-1] in INTEGER_BUFFER_NAMES:
                continue
            raise InvalidValueError(
                f"{source}: tensor {key!r} holds {value.dtype} values; weights are floating-point tensors",
                file=source, fix="check that this is the right file, or re-save the weights as floating point")
        if value.is_complex() or not bool(torch.isfinite(value).all()):
            what = "complex" if value.is_complex() else "NaN or infinite"
            raise InvalidValueError(
                f"{source}: tensor {key!r} contains {what} values", file=source,
                fix="the checkpoint comes from a diverged training or is damaged: use another checkpoint")
