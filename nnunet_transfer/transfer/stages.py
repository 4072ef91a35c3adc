"""Match the stages of two nnU-Net U-Nets with a different number of stages (plans of other datasets).

nnU-Net's U-Nets (``PlainConvUNet``, ``ResidualEncoderUNet`` and our networks built on their encoder and decoder)
name their tensors ``encoder.stages.<i>.*`` (input first) and ``decoder.{stages,transpconvs,seg_layers}.<j>.*``
(lowest resolution first). A list index therefore means different things in networks of different depth:

- encoder stages are matched **by position from the input**: stage ``i`` -> stage ``i``;
- decoder stages are matched **by resolution**: decoder stage ``j`` of an ``n``-stage network works at resolution
  level ``n - 2 - j`` (level 0 = full resolution) and goes to the target's decoder stage at the same level.

Source stages the target lacks are *surplus* (reported, not loaded); target stages the source lacks stay new.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional

import torch

_ENCODER = re.compile(r"^(?P<head>(?:.*\.)?encoder\.stages\.)(?P<index>\d+)(?P<tail>\..+)$")
_DECODER = re.compile(r"^(?P<head>(?:.*\.)?decoder\.(?:stages|transpconvs|seg_layers)\.)(?P<index>\d+)"
                      r"(?P<tail>\..+)$")


def encoder_stage_count(keys: Iterable[str]) -> Optional[int]:
    """Number of encoder stages named in ``keys`` (``None`` when there is no ``encoder.stages.<i>`` key)."""
    indices = [int(m["index"]) for m in map(_ENCODER.match, keys) if m]
    return max(indices) + 1 if indices else None


def _decoder_stage_count(keys: Iterable[str]) -> Optional[int]:
    indices = [int(m["index"]) for m in map(_DECODER.match, keys) if m]
    return max(indices) + 1 if indices else None


def _stage_range(first: int, last: int) -> str:
    return f"stage {first}" if first == last else f"stages {first}..{last}"


@dataclass
class StageMatch:
    """The renamed checkpoint, the checkpoint keys of surplus stages, and one note per decision."""

    state_dict: Dict[str, torch.Tensor]
    surplus: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def match_stages(state_dict: Mapping[str, torch.Tensor], network_keys: Iterable[str]) -> StageMatch:
    """Rename the checkpoint's stage indices to the network's (see the module docstring)."""
    network_keys = list(network_keys)
    n_source, n_target = encoder_stage_count(state_dict), encoder_stage_count(network_keys)
    if n_source is None or n_target is None:
        return StageMatch(dict(state_dict))
    # an encoder-only checkpoint still tells its depth; a decoder of d stages belongs to d + 1 encoder stages
    decoder_source = _decoder_stage_count(state_dict)
    if decoder_source is not None and decoder_source + 1 > n_source:
        n_source = decoder_source + 1
    if n_source == n_target:
        return StageMatch(dict(state_dict))
    out: Dict[str, torch.Tensor] = {}
    surplus: List[str] = []
    decoder_moves: Dict[int, Optional[int]] = {}
    for key, value in state_dict.items():
        enc = _ENCODER.match(key)
        dec = None if enc else _DECODER.match(key)
        if enc:
            if int(enc["index"]) >= n_target:
                surplus.append(key)
                continue
            out[key] = value
        elif dec:
            level = n_source - 2 - int(dec["index"])
            new_index = n_target - 2 - level
            decoder_moves[int(dec["index"])] = new_index if new_index >= 0 else None
            if new_index < 0:
                surplus.append(key)
                continue
            out[f"{dec['head']}{new_index}{dec['tail']}"] = value
        else:
            out[key] = value
    notes = [f"encoder: {n_source} stages in the checkpoint, {n_target} in the network; stages matched by position "
             f"from the input"]
    if n_source > n_target:
        notes.append(f"encoder {_stage_range(n_target, n_source - 1)} of the checkpoint: surplus (not loaded)")
    else:
        notes.append(f"encoder {_stage_range(n_source, n_target - 1)} of the network: new (no counterpart)")
    if decoder_moves:
        moves = ", ".join(f"{j}->{'surplus' if t is None else t}" for j, t in sorted(decoder_moves.items()))
        notes.append(f"decoder stages matched by resolution (checkpoint index -> network index): {moves}")
        if n_target > n_source:
            notes.append(f"decoder {_stage_range(0, n_target - n_source - 1)} of the network (lowest resolutions): "
                         "new")
    return StageMatch(out, surplus, notes)
