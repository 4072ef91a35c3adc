"""nnU-Net master's ``pretrain_info`` block of the plans, read and written exactly as nnU-Net defines it.

nnU-Net's master branch (after 2.8.1) describes the weights a fine-tuning starts from in a top-level ``pretrain_info``
entry of the plans (``nnunetv2/experiment_planning/like_nnssl.py``: ``preprocess_like_nnssl`` and
``plan_like_dynamic`` write it from an nnssl checkpoint; ``PretrainedTrainer`` and ``nnUNetv2_train_pretrained``
read it)::

    "pretrain_info": {
        "checkpoint_path": str | None,        # None: train the same architecture from scratch
        "checkpoint_name": str,               # the pretraining's name, part of the plans name
        "key_to_encoder": str, "key_to_stem": str, "keys_to_in_proj": [str, ...], "key_to_lpe": str | None,
        "pt_num_in_channels": int, "pt_used_patchsize": [int, ...],
        "pt_recommended_downstream_patchsize": [int, ...],
        "citations": [{"type": ..., "name": ..., "apa_citations" | "bibtex_citations": [...]}, ...],
        "pt_architecture_kwargs": {...}       # written by plan_like_dynamic only
    }

Our trainers apply it when a configuration has no pretrained-weights record of ours
(:mod:`nnunet_transfer.transfer.record`): the encoder and stem load through the one transfer path, with the input
projection adapted to the channels and the positional embedding resized over the token grid, the network's own
``key_to_encoder``/``key_to_stem`` standing in for the checkpoint's (as nnU-Net master maps them). ``set-pretrained``
writes the block for nnssl checkpoints, so the same plans also work with ``nnUNetv2_train_pretrained``. Keys we do
not know are kept as they are, so a block round-trips unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from torch import nn

from nnunet_transfer.errors import InvalidValueError, NnUNetTransferError
from nnunet_transfer.pretrained.formats.base import SourceWeights

__all__ = ["PRETRAIN_INFO_KEY", "PretrainInfo", "read_pretrain_info", "write_pretrain_info",
           "pretrain_info_from_nnssl", "transfer_from_pretrain_info", "format_citations"]

PRETRAIN_INFO_KEY = "pretrain_info"
#: the keys nnU-Net master writes, in its order (``pt_architecture_kwargs`` only from ``plan_like_dynamic``)
_REQUIRED = ("checkpoint_path", "checkpoint_name", "key_to_encoder", "key_to_stem", "keys_to_in_proj", "key_to_lpe",
             "pt_num_in_channels", "pt_used_patchsize", "pt_recommended_downstream_patchsize", "citations")


def _int_list(value: Any, name: str) -> List[int]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                        for v in value):
        raise InvalidValueError(f"pretrain_info.{name} must be a list of integers, got {value!r}")
    return [int(v) for v in value]


def _text(value: Any, name: str, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidValueError(f"pretrain_info.{name} must be a string{' or null' if optional else ''}, got {value!r}")
    return value


@dataclass
class PretrainInfo:
    """One ``pretrain_info`` block (see the module docstring)."""

    checkpoint_path: Optional[str]
    checkpoint_name: str
    key_to_encoder: str
    key_to_stem: str
    keys_to_in_proj: List[str]
    key_to_lpe: Optional[str]
    pt_num_in_channels: int
    pt_used_patchsize: List[int]
    pt_recommended_downstream_patchsize: List[int]
    citations: List[Dict[str, Any]] = field(default_factory=list)
    #: further keys (``pt_architecture_kwargs`` ...), kept unchanged
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PretrainInfo":
        """Validate a block read from a plans file (untrusted: every value is type-checked)."""
        if not isinstance(data, Mapping):
            raise InvalidValueError(f"pretrain_info must be a JSON object, got {type(data).__name__}")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise InvalidValueError(f"pretrain_info lacks {missing} (nnU-Net master writes {list(_REQUIRED)})")
        keys = data["keys_to_in_proj"]
        if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
            raise InvalidValueError(f"pretrain_info.keys_to_in_proj must be a list of strings, got {keys!r}")
        channels = data["pt_num_in_channels"]
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise InvalidValueError(f"pretrain_info.pt_num_in_channels must be a positive integer, got {channels!r}")
        citations = data["citations"]
        if not isinstance(citations, list) or not all(isinstance(c, Mapping) for c in citations):
            raise InvalidValueError("pretrain_info.citations must be a list of objects")
        return cls(
            checkpoint_path=_text(data["checkpoint_path"], "checkpoint_path", optional=True),
            checkpoint_name=_text(data["checkpoint_name"], "checkpoint_name"),
            key_to_encoder=_text(data["key_to_encoder"], "key_to_encoder"),
            key_to_stem=_text(data["key_to_stem"], "key_to_stem"),
            keys_to_in_proj=list(keys), key_to_lpe=_text(data["key_to_lpe"], "key_to_lpe", optional=True),
            pt_num_in_channels=channels, pt_used_patchsize=_int_list(data["pt_used_patchsize"], "pt_used_patchsize"),
            pt_recommended_downstream_patchsize=_int_list(data["pt_recommended_downstream_patchsize"],
                                                          "pt_recommended_downstream_patchsize"),
            citations=[dict(c) for c in citations],
            extra={k: v for k, v in data.items() if k not in _REQUIRED})

    def to_dict(self) -> Dict[str, Any]:
        """The block as nnU-Net master writes it (same keys, same order)."""
        return {"checkpoint_path": self.checkpoint_path, "checkpoint_name": self.checkpoint_name,
                "key_to_encoder": self.key_to_encoder, "key_to_stem": self.key_to_stem,
                "keys_to_in_proj": list(self.keys_to_in_proj), "key_to_lpe": self.key_to_lpe,
                "pt_num_in_channels": self.pt_num_in_channels, "pt_used_patchsize": list(self.pt_used_patchsize),
                "pt_recommended_downstream_patchsize": list(self.pt_recommended_downstream_patchsize),
                "citations": list(self.citations), **self.extra}


def read_pretrain_info(plans: Mapping[str, Any]) -> Optional[PretrainInfo]:
    """The plans' ``pretrain_info`` block, or None when there is none."""
    data = plans.get(PRETRAIN_INFO_KEY)
    return None if data is None else PretrainInfo.from_dict(data)


def pretrain_info_from_nnssl(checkpoint: Union[str, Path, SourceWeights], name: str,
                             dynamic: bool = True) -> PretrainInfo:
    """The block nnU-Net master derives from an nnssl checkpoint (``dynamic``: as ``plan_like_dynamic``, which adds
    ``pt_architecture_kwargs``; else as ``preprocess_like_nnssl``). ``checkpoint``: a path (read once, as data) or
    the checkpoint already read."""
    from nnunet_transfer.pretrained.source import read_source_weights

    source = checkpoint if not isinstance(checkpoint, (str, Path)) else read_source_weights(checkpoint)
    path = Path(source.file or source.source).resolve()
    metadata = source.reading.metadata
    plan = metadata.get("adaptation_plan")
    if source.format != "nnssl" or not isinstance(plan, Mapping):
        raise NnUNetTransferError(f"{source.source} is not an nnssl checkpoint (no nnssl_adaptation_plan)", file=path,
                                  fix="nnU-Net's pretrain_info describes nnssl checkpoints; use set-pretrained's "
                                      "record for other files")
    try:
        configurations = plan["pretrain_plan"]["configurations"]
        pretrain_config = next(iter(configurations.values()))
        data = {"checkpoint_path": str(path), "checkpoint_name": name, "key_to_encoder": plan["key_to_encoder"],
                "key_to_stem": plan["key_to_stem"], "keys_to_in_proj": list(plan["keys_to_in_proj"]),
                "key_to_lpe": plan["key_to_lpe"], "pt_num_in_channels": plan["pretrain_num_input_channels"],
                "pt_used_patchsize": list(pretrain_config["patch_size"]),
                "pt_recommended_downstream_patchsize": list(plan["recommended_downstream_patchsize"]),
                "citations": list(metadata.get("citations", []))}
    except (KeyError, TypeError, StopIteration) as exc:
        raise NnUNetTransferError(f"{path}: its nnssl adaptation plan lacks {exc} (needed for pretrain_info)",
                                  file=path) from exc
    if dynamic:
        data["pt_architecture_kwargs"] = plan.get("architecture_kwargs", {})
    return PretrainInfo.from_dict(data)


def write_pretrain_info(plans_file: Union[str, Path], info: Optional[PretrainInfo]) -> None:
    """Set (or with None remove) the plans' ``pretrain_info`` block, atomically."""
    from nnunet_transfer.transfer.record import write_json_atomic

    plans_file = Path(plans_file)
    plans = json.loads(plans_file.read_text())
    if info is None:
        plans.pop(PRETRAIN_INFO_KEY, None)
    else:
        plans[PRETRAIN_INFO_KEY] = info.to_dict()
    write_json_atomic(plans_file, plans)


def format_citations(info: PretrainInfo) -> str:
    """The block's citations as lines, as nnU-Net master prints them when training starts."""
    lines = []
    for cit in sorted(info.citations, key=lambda c: str(c.get("type", ""))):
        lines.append(f"{cit.get('type', '?')} used '{cit.get('name', '?')}'. Associated paper(s):")
        lines += [str(p) for p in (cit.get("apa_citations") or cit.get("bibtex_citations") or [])]
    return "\n".join(lines)


def transfer_from_pretrain_info(network: nn.Module, info: PretrainInfo, head_patterns: Sequence[str] = (),
                                min_fraction: float = 0.0):
    """Load ``info``'s checkpoint into ``network`` through the one transfer path; returns its report.

    The checkpoint's encoder and stem names map onto the network's own (``key_to_encoder``/``key_to_stem`` when the
    network states them), as nnU-Net master's ``load_pretrained_weights`` does.
    """
    from nnunet_transfer.transfer.weights import HEAD_PATTERNS, transfer_weights

    if info.checkpoint_path is None:
        raise InvalidValueError("pretrain_info.checkpoint_path is null: the plans ask for training from scratch")
    prefix_map: Dict[str, str] = {}
    for source, attribute in ((info.key_to_encoder, "key_to_encoder"), (info.key_to_stem, "key_to_stem")):
        target = getattr(network, attribute, None)
        if source and target is not None and target != source:
            prefix_map[source + "."] = target + "." if target else ""
    report = transfer_weights(network, info.checkpoint_path, prefix_map=prefix_map,
                              head_patterns=tuple(head_patterns) or HEAD_PATTERNS, min_fraction=min_fraction)
    report.notes.append(f"from the plans' pretrain_info ({info.checkpoint_name})")
    if info.citations:
        report.notes.append("Please cite the papers of the pretrained weights:\n" + format_citations(info))
    return report
