"""nnssl checkpoints (``AbstractBaseTrainer.save_checkpoint``): the nnU-Net v2 layout plus
``"nnssl_adaptation_plan"`` (architecture, ``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``, pretraining
plan). As nnU-Net's own nnssl fine-tuning, only the encoder and stem transfer; the pretext decoder is filtered out
and reported. The pretraining plan comes along as the reading's plans (checked as data before use)."""

from __future__ import annotations

from typing import Any, Mapping

from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError, find_state_dict, strip_key_prefixes


def detect(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "nnssl_adaptation_plan" in obj


def read(obj: Any, source: str) -> FormatReading:
    plan = obj["nnssl_adaptation_plan"]
    if not isinstance(plan, Mapping):
        raise CheckpointFormatError(f"{source}: nnssl_adaptation_plan is a {type(plan).__name__}, not a dict")
    state = strip_key_prefixes(find_state_dict(obj, source=source))
    prefixes = [plan.get(k) for k in ("key_to_encoder", "key_to_stem") if plan.get(k)]
    if not prefixes:
        raise CheckpointFormatError(f"{source}: the nnssl adaptation plan names neither key_to_encoder nor key_to_stem")
    if not all(isinstance(p, str) for p in prefixes):
        raise CheckpointFormatError(f"{source}: the nnssl adaptation plan's key_to_encoder/key_to_stem are "
                                    f"{prefixes!r}, not key names")
    keep = {k: v for k, v in state.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}
    filtered = sorted(set(state) - set(keep))
    architecture = plan.get("architecture_plans")
    arch = architecture.get("arch_class_name", "?") if isinstance(architecture, Mapping) else "?"
    trainer = obj.get("trainer_name", "?")
    note = (f"nnssl checkpoint ({arch}, {trainer}): only the encoder and stem transfer "
            f"({', '.join(prefixes)}), as in nnU-Net's nnssl fine-tuning; {len(filtered)} pretext tensors filtered "
            f"out; recommended downstream patch {plan.get('recommended_downstream_patchsize')}")
    pretrain_plan = plan.get("pretrain_plan")
    if pretrain_plan is not None and not isinstance(pretrain_plan, Mapping):
        raise CheckpointFormatError(f"{source}: the nnssl pretrain_plan is a {type(pretrain_plan).__name__}, "
                                    "not a dict")
    return FormatReading(keep, filtered, [note], pretrain_plan,
                         metadata={"architecture": str(arch), "trainer_name": str(trainer)})


FORMAT = CheckpointFormat(name="nnssl", family="nnssl", detect=detect, read=read)
