"""nnU-Net v2 checkpoints, as ``nnUNetTrainer.save_checkpoint`` writes them: ``{"network_weights",
"optimizer_state", "grad_scaler_state", "logging", "_best_ema", "current_epoch", "init_args", "trainer_name",
"inference_allowed_mirroring_axes"}``. Only ``network_weights`` are offered; the trainer name goes to the metadata."""

from __future__ import annotations

from typing import Any, Mapping

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading, state_dict_of


def detect(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "network_weights" in obj


def read(obj: Any, source: str) -> FormatReading:
    metadata = {k: obj[k] for k in ("trainer_name", "current_epoch") if isinstance(obj.get(k), (str, int))}
    return FormatReading(state_dict_of(obj, source), metadata=metadata)


FORMAT = CheckpointFormat(name="nnunet_v2", family="nnU-Net v2", detect=detect, read=read)
