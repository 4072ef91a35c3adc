"""Any plain state dict: ``{name: tensor}`` at the top level or under a usual wrapper key (``state_dict``,
``network_weights``, ``model`` ...), ``.safetensors`` files included. The last format tried: it takes whatever holds
tensors, and its error says what a readable file looks like."""

from __future__ import annotations

from typing import Any

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading
from nnunet_transfer.pretrained.safe_load import find_state_dict, strip_key_prefixes


def detect(obj: Any) -> bool:
    return True  # the fallback: read() raises CheckpointFormatError when obj holds no state dict


def read(obj: Any, source: str) -> FormatReading:
    return FormatReading(strip_key_prefixes(find_state_dict(obj, source=source)))


FORMAT = CheckpointFormat(name="state_dict", family="plain state dict", detect=detect, read=read)
