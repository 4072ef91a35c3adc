"""Pretrained checkpoints as data: bytes in, named tensors plus what the format says about them out.

Nothing here knows a network; mapping, adapting and loading the tensors is :mod:`nnunet_transfer.transfer`'s work
(it imports this package, never the other way).

- :mod:`nnunet_transfer.pretrained.safe_load`: deserialising checkpoint bytes without running code
  (``weights_only`` torch loading, safetensors), state-dict unwrapping, prefix stripping;
- :mod:`nnunet_transfer.pretrained.formats`: one reader per released checkpoint format, tried in order;
- :mod:`nnunet_transfer.pretrained.source`: a checkpoint file, nnU-Net results folder or model zip read once into
  :class:`~nnunet_transfer.pretrained.formats.base.SourceWeights` (sha256, format, tensors);
- :mod:`nnunet_transfer.pretrained.registry`: one record per released MedicalNet checkpoint;
- :mod:`nnunet_transfer.pretrained.plans_check`: plans.json files from elsewhere checked as data.
"""

from nnunet_transfer.pretrained.formats.base import SourceWeights
from nnunet_transfer.pretrained.safe_load import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_state_dict_file,
    read_checkpoint_file,
)
from nnunet_transfer.pretrained.source import read_source_weights

__all__ = [
    "CheckpointFormatError",
    "SourceWeights",
    "UnsafeCheckpointError",
    "load_state_dict_file",
    "read_checkpoint_file",
    "read_source_weights",
]
