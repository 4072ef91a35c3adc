"""Any plain state dict: ``{name: tensor}`` at the top level or under a usual wrapper key (``state_dict``,
``network_weights``, ``model`` ...), ``.safetensors`` files included. The last format tried: it takes whatever holds
tensors, and its error says what a readable file looks like."""

from __future__ import annotations

from typing import Any

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading, state_dict_of


def detect(obj: Any) -> bool:
    return True  # the fallback: read() raises CheckpointFormatError when obj holds no state dict


def read(obj: Any, source: str) -> FormatReading:
    return FormatReading(state_dict_of(obj, source))


FORMAT = CheckpointFormat(name="state_dict", family="plain state dict", detect=detect, read=read)
