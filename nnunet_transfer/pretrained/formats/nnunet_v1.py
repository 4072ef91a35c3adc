"""nnU-Net v1 checkpoints: ``NetworkTrainer.save_checkpoint`` writes ``model_final_checkpoint.model`` =
``{"epoch", "state_dict", "optimizer_state_dict", "lr_scheduler_state_dict", "plot_stuff", "best_stuff"[,
"amp_grad_scaler"]}`` (numpy numbers in the logs), and ``nnUNetTrainer.save_checkpoint`` adds ``<file>.pkl`` =
``OrderedDict(init, name, class, plans)`` written with ``pickle.dump`` (read by :func:`read_v1_companion` as data
only). ``Generic_UNet`` keys are renamed to the equivalent v2 ``PlainConvUNet`` keys (:func:`generic_unet_v1_to_v2`);
networks of their own (STU-Net, UniSeg) keep their keys, so what matches loads and the rest is reported.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from nnunet_transfer.pretrained.data_only_pickle import read_data_only_pickle
from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading, state_dict_of, state_dict_or_none
from nnunet_transfer.pretrained.safe_load import CheckpointFormatError

_V1_CONTEXT = re.compile(r"^conv_blocks_context\.(\d+)\.blocks\.(\d+)\.(conv|instnorm)\.(.+)$")
_V1_TWO_PART = re.compile(r"^(conv_blocks_context|conv_blocks_localization)\.(\d+)\.([01])\.blocks\.(\d+)\."
                          r"(conv|instnorm)\.(.+)$")
_V1_SIMPLE = {re.compile(r"^tu\.(\d+)\.(.+)$"): "decoder.transpconvs.{0}.{1}",
              re.compile(r"^seg_outputs\.(\d+)\.(.+)$"): "decoder.seg_layers.{0}.{1}"}
_V1_LAYER = {"conv": "conv", "instnorm": "norm"}


def is_generic_unet_v1(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the keys are those of nnU-Net v1's ``Generic_UNet`` (or a network built like it)."""
    return any(isinstance(k, str) and k.startswith("conv_blocks_context.") for k in state_dict)


def generic_unet_v1_to_v2(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], int]:
    """Rename v1 ``Generic_UNet`` keys to nnU-Net v2 ``PlainConvUNet`` keys; returns (state dict, keys renamed).

    v1 stage ``d`` (``conv_blocks_context.d.blocks.c``) is v2 ``encoder.stages.d.0.convs.c``; v1 builds the bottleneck
    and each decoder stage from two stacks (``.0`` with n-1 convolutions, ``.1`` with one), v2 from one stack of n;
    ``tu`` are v2's ``decoder.transpconvs``, ``seg_outputs`` its ``decoder.seg_layers`` (both lowest resolution
    first, and both concatenate ``(upsampled, skip)``). ``instnorm`` is v2's ``norm``. v1 transposed convolutions and
    segmentation layers have no bias: the v2 biases stay new (nnU-Net initialises them to zero). Keys of other
    layouts are kept as they are.
    """
    first_part = {}
    for key in state_dict:
        m = _V1_TWO_PART.match(key)
        if m and m[3] == "0":
            block = (m[1], m[2])
            first_part[block] = max(first_part.get(block, 0), int(m[4]) + 1)
    out: Dict[str, torch.Tensor] = {}
    renamed = 0
    for key, value in state_dict.items():
        new = None
        m = _V1_CONTEXT.match(key)
        if m:
            new = f"encoder.stages.{m[1]}.0.convs.{m[2]}.{_V1_LAYER[m[3]]}.{m[4]}"
        elif (m := _V1_TWO_PART.match(key)):
            index = int(m[4]) + (first_part.get((m[1], m[2]), 0) if m[3] == "1" else 0)
            prefix = f"encoder.stages.{m[2]}.0" if m[1] == "conv_blocks_context" else f"decoder.stages.{m[2]}"
            new = f"{prefix}.convs.{index}.{_V1_LAYER[m[5]]}.{m[6]}"
        else:
            for pattern, template in _V1_SIMPLE.items():
                if (m := pattern.match(key)):
                    new = template.format(*m.groups())
                    break
        renamed += new is not None
        out[new or key] = value
    return out, renamed


def read_v1_plans_pickle(checkpoint: Path) -> Optional[Mapping[str, Any]]:
    """The ``<checkpoint>.pkl`` nnU-Net v1 writes next to a ``.model`` file (data only), or None if absent."""
    pkl = checkpoint.with_name(checkpoint.name + ".pkl")
    if not pkl.is_file():
        return None
    info = read_data_only_pickle(pkl)
    if not isinstance(info, Mapping):
        raise CheckpointFormatError(f"{pkl} holds a {type(info).__name__}, not nnU-Net v1's info dict")
    return info


def _v1_plans_note(info: Mapping[str, Any]) -> str:
    plans = info.get("plans") or {}
    stages = plans.get("plans_per_stage") or {}
    stage = stages[max(stages)] if stages else {}
    patch = stage.get("patch_size")
    spacing = stage.get("current_spacing")
    return (f"nnU-Net v1 trainer {info.get('name', '?')}: patch size "
            f"{list(map(int, patch)) if patch is not None else '?'}, spacing "
            f"{[round(float(s), 3) for s in spacing] if spacing is not None else '?'}, kernels "
            f"{stage.get('conv_kernel_sizes', '?')}")


def read_v1_companion(checkpoint: Path) -> Tuple[Optional[Mapping[str, Any]], List[str]]:
    """(plans, notes) from the ``<checkpoint>.pkl`` next to a v1 ``.model`` file; (None, []) when there is none."""
    if checkpoint.suffix != ".model":
        return None, []
    info = read_v1_plans_pickle(checkpoint)
    if info is None:
        return None, []
    return info.get("plans"), [_v1_plans_note(info)]


def detect(obj: Any) -> bool:
    state = state_dict_or_none(obj)
    return state is not None and is_generic_unet_v1(state)


def read(obj: Any, source: str) -> FormatReading:
    state, renamed = generic_unet_v1_to_v2(state_dict_of(obj, source))
    note = f"nnU-Net v1 Generic_UNet keys mapped onto nnU-Net v2 PlainConvUNet keys ({renamed} renamed)"
    return FormatReading(state, notes=[note])


FORMAT = CheckpointFormat(name="nnunet_v1", family="nnU-Net v1 (Generic_UNet)", detect=detect, read=read,
                          companion=read_v1_companion)
