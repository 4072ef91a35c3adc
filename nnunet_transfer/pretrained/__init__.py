"""Pretrained checkpoints: reading foreign weights safely, the formats we know, and a registry of released files.

- :mod:`nnunet_transfer.pretrained.safe_load`: ``weights_only`` reading, state-dict unwrapping, prefix
  stripping, input-channel adaptation and a loading report, reusable for any foreign checkpoint;
- :mod:`nnunet_transfer.pretrained.nnunet_family`: nnU-Net v1/v2, results folders and zips, nnssl checkpoints;
- :mod:`nnunet_transfer.pretrained.medicalnet`: MedicalNet's format (head keys, architecture inference, loading);
- :mod:`nnunet_transfer.pretrained.registry`: one record per released MedicalNet checkpoint and
  :func:`~nnunet_transfer.pretrained.registry.verify_checkpoint` for downloaded files.

Only the generic reading tools are imported here; import the format and registry modules by their names (they build
on the transfer path, which itself reads checkpoints through this package).
"""

from nnunet_transfer.pretrained.safe_load import (
    CheckpointFormatError,
    LoadReport,
    UnsafeCheckpointError,
    adapt_input_channels,
    load_matching,
    load_state_dict_file,
    read_checkpoint_file,
)

__all__ = [
    "CheckpointFormatError",
    "LoadReport",
    "UnsafeCheckpointError",
    "adapt_input_channels",
    "load_matching",
    "load_state_dict_file",
    "read_checkpoint_file",
]
