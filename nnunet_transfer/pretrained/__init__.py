"""Pretrained checkpoints: a registry of released files and safe loading of foreign weights.

- :mod:`nnunet_transfer.pretrained.registry`: one record per released MedicalNet checkpoint and
  :func:`~nnunet_transfer.pretrained.registry.verify_checkpoint` for downloaded files.
- :mod:`nnunet_transfer.pretrained.safe_load`: ``weights_only`` reading, state-dict unwrapping, prefix
  stripping, input-channel adaptation and a loading report, reusable for any foreign checkpoint.

The registry names are imported lazily: the registry needs the Med3D encoder, and the encoder needs
``safe_load``, so importing the registry here eagerly would make the two packages import each other.
"""

from typing import Any

from nnunet_transfer.pretrained.safe_load import (
    CheckpointFormatError,
    LoadReport,
    UnsafeCheckpointError,
    adapt_input_channels,
    load_matching,
    load_state_dict_file,
    read_checkpoint_file,
)

_REGISTRY_NAMES = ("MEDICALNET_CHECKPOINTS", "PretrainedCheckpoint", "VerificationReport", "get_checkpoint",
                   "list_checkpoints", "verify_checkpoint")

__all__ = [
    *_REGISTRY_NAMES,
    "CheckpointFormatError",
    "LoadReport",
    "UnsafeCheckpointError",
    "adapt_input_channels",
    "load_matching",
    "load_state_dict_file",
    "read_checkpoint_file",
]


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from nnunet_transfer.pretrained import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
