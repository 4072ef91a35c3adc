"""nnssl checkpoints (``AbstractBaseTrainer.save_checkpoint``): the nnU-Net v2 layout plus
``"nnssl_adaptation_plan"`` (architecture, ``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``, pretraining
plan). As nnU-Net's own nnssl fine-tuning, only the encoder and stem transfer; the pretext decoder is filtered out
and reported. The pretraining plan comes along as the reading's plans (checked as data before use)."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

import torch

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
    citations = obj.get("citations", [])
    metadata = {"architecture": str(arch), "trainer_name": str(trainer), "adaptation_plan": dict(plan),
                "citations": list(citations) if isinstance(citations, (list, tuple)) else [],
                "architecture_plans": architecture}
    grid = token_grid(plan, state)
    if grid is not None:  # a transformer: its positional embedding belongs to this token grid
        metadata["token_grid"] = grid
    return FormatReading(keep, filtered, [note], pretrain_plan, metadata=metadata)


def pretraining_patch_size(plan: Mapping[str, Any]) -> Optional[List[int]]:
    """The patch size an nnssl checkpoint was pretrained with: ``pretrain_patch_size`` when the plan overrides it
    (as nnU-Net master reads it), else the patch size of the pretraining plan's (first) configuration."""
    override = plan.get("pretrain_patch_size")
    if override is not None:
        return [int(p) for p in override]
    pretrain_plan = plan.get("pretrain_plan")
    configurations = pretrain_plan.get("configurations") if isinstance(pretrain_plan, Mapping) else None
    first = next(iter(configurations.values()), None) if isinstance(configurations, Mapping) else None
    patch = first.get("patch_size") if isinstance(first, Mapping) else None
    return None if patch is None else [int(p) for p in patch]


def token_grid(plan: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> Optional[Tuple[int, ...]]:
    """A transformer checkpoint's token grid: pretraining patch size / patch-embedding kernel (the stem projection,
    ``keys_to_in_proj``), as nnU-Net master computes it; None for networks without a positional embedding."""
    if not plan.get("key_to_lpe"):
        return None
    patch = pretraining_patch_size(plan)
    in_proj = plan.get("keys_to_in_proj") or ()
    projections = [f"{k}.weight" for k in in_proj if isinstance(k, str)]
    weight = next((state[k] for k in projections if k in state), None)
    if patch is None or weight is None or weight.ndim != 2 + len(patch):
        return None
    return tuple(int(p) // int(k) for p, k in zip(patch, weight.shape[2:]))


FORMAT = CheckpointFormat(name="nnssl", family="nnssl", detect=detect, read=read)
