"""Moving pretrained weights into a fine-tuning network: the one transfer path every fine-tuning trainer uses.

Filter -> match -> adapt -> load non-strict -> report (the timm recipe, extended to nnU-Net's plans), on top of
:mod:`nnunet_transfer.pretrained.safe_load` (which reads foreign files without executing pickled code):

1. read the checkpoint (nnU-Net ``checkpoint_final.pth``, MOTS-pretrained included; MedicalNet; a plain state dict;
   safetensors) and strip wrapper prefixes;
2. optionally rename key prefixes (e.g. MedicalNet's ``conv1.weight`` -> our ``encoder.conv1.weight``);
3. drop the keys that must never carry over: the task-specific output layers (``.seg_layers.``) and DoDNet's
   ``controller``: the downstream network gets plain 1x1x1 segmentation convolutions, initialised fresh;
4. match the stages of U-Nets of another depth (:mod:`nnunet_transfer.transfer.stages`);
5. adapt what another plan changed (:mod:`nnunet_transfer.transfer.adapt`: kernel sizes, transposed-conv strides,
   feature counts, input channels);
6. load everything that fits and return a :class:`TransferReport` that gives every network tensor one status:
   loaded, adapted (with the rule), new (no counterpart) or skipped (with the reason).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from nnunet_transfer.errors import InvalidValueError, MissingEntryError, NotApplicableError
from nnunet_transfer.pretrained.formats.base import SourceWeights
from nnunet_transfer.pretrained.source import read_source_weights, source_weights_from_state_dict
from nnunet_transfer.transfer.loading import LoadReport, load_matching
from nnunet_transfer.transfer.adapt import (AdaptOptions, NotAdaptable, TensorRole, adapt_tensor, tensor_roles,
                                            token_grid)
from nnunet_transfer.transfer.stages import match_stages

#: checkpoint keys containing one of these never transfer (task heads); the network keeps fresh layers there
DEFAULT_EXCLUDE: Tuple[str, ...] = (".seg_layers.", "controller.")
#: network keys containing one of these are the task head, re-initialised by design (not "missing")
HEAD_PATTERNS: Tuple[str, ...] = (".seg_layers.",)

#: a checkpoint path (file, results folder, zip), an in-memory state dict, or a checkpoint already read
StateDictSource = Union[str, Path, Mapping[str, torch.Tensor], SourceWeights]


@dataclass
class TransferReport(LoadReport):
    """:class:`LoadReport` plus the network keys that are new by design (segmentation head, gates ...)."""

    reinitialised: List[str] = field(default_factory=list)
    checkpoint: str = ""
    #: checkpoint keys of stages the network does not have (a deeper source), not loaded
    surplus: List[str] = field(default_factory=list)
    #: how stages were matched between networks of different depth
    notes: List[str] = field(default_factory=list)

    @classmethod
    def from_load_report(cls, report: LoadReport, head_patterns: Sequence[str], checkpoint: str) -> "TransferReport":
        fields = asdict(report)
        head = [k for k in report.missing if any(p in k for p in head_patterns)]
        fields["missing"] = [k for k in report.missing if k not in head]
        return cls(**fields, reinitialised=head, checkpoint=checkpoint)

    @property
    def pretrained_keys(self) -> List[str]:
        """Network keys whose values came from the checkpoint."""
        return list(self.loaded)

    def count_rows(self) -> List[Tuple[str, int]]:
        return super().count_rows() + [("re-initialised (new head)", len(self.reinitialised)),
                                       ("surplus source stages (ignored)", len(self.surplus))]

    def tensor_status(self) -> Dict[str, Dict[str, str]]:
        """``{network key: {"status": loaded|adapted|new|skipped, "detail": ...}}``, one entry per network tensor."""
        status: Dict[str, Dict[str, str]] = {}
        adapted = dict(self.adapted)
        for key in self.loaded:
            status[key] = ({"status": "adapted", "detail": adapted[key]} if key in adapted
                           else {"status": "loaded", "detail": ""})
        for key in self.reinitialised:
            status[key] = {"status": "new", "detail": "task head, initialised fresh"}
        for key in self.missing:
            status[key] = {"status": "new", "detail": "no counterpart in the checkpoint"}
        for key, cs, ms in self.shape_mismatched:
            reason = self.mismatch_reasons.get(key, "shapes differ")
            status[key] = {"status": "skipped", "detail": f"checkpoint {list(cs)} vs network {list(ms)}: {reason}"}
        return status

    def __str__(self) -> str:
        return "\n".join([super().__str__(), *self.notes])

    def to_json(self) -> dict:
        data = asdict(self)
        data["summary"] = {
            "loaded": self.n_loaded, "skipped": len(self.skipped), "missing": self.n_missing,
            "reinitialised": len(self.reinitialised), "unexpected": self.n_unexpected,
            "shape_mismatched": self.n_shape_mismatched, "adapted": len(self.adapted),
            "new": self.n_missing + len(self.reinitialised), "surplus": len(self.surplus),
            "loaded_parameters": self.loaded_parameters, "total_parameters": self.total_parameters,
            "fraction_parameters_loaded": self.fraction_loaded,
        }
        data["tensors"] = self.tensor_status()
        return data

    def save(self, folder: Union[str, Path], stem: str = "transfer_report") -> Tuple[Path, Path]:
        """Write ``stem.json`` and ``stem.txt`` into ``folder`` (next to nnU-Net's training log)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, txt_path = folder / f"{stem}.json", folder / f"{stem}.txt"
        json_path.write_text(json.dumps(self.to_json(), indent=2))
        txt_path.write_text(str(self) + "\n")
        return json_path, txt_path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TransferReport":
        data = json.loads(Path(path).read_text())
        data.pop("summary", None)
        data.pop("tensors", None)
        data["shape_mismatched"] = [(k, tuple(a), tuple(b)) for k, a, b in data.get("shape_mismatched", [])]
        data["adapted"] = [tuple(x) for x in data.get("adapted", [])]
        return cls(**data)


def read_source(source: StateDictSource) -> SourceWeights:
    """The checkpoint as read once: a path is read (safely, in nnU-Net v2 names), an in-memory state dict wrapped,
    source weights already read passed through."""
    if isinstance(source, SourceWeights):
        return source
    if isinstance(source, (str, Path)):
        return read_source_weights(source)
    return source_weights_from_state_dict(source)


def read_state_dict(source: StateDictSource) -> Dict[str, torch.Tensor]:
    """The tensors :func:`read_source` offers for transfer, with ``module.``/``_orig_mod.`` prefixes removed."""
    return read_source(source).tensors


def rename_prefixes(state_dict: Mapping[str, torch.Tensor], prefix_map: Mapping[str, str]) -> Dict[str, torch.Tensor]:
    """Replace the longest matching source prefix of each key (``{"": "encoder."}`` prepends to every key)."""
    ordered = sorted(prefix_map.items(), key=lambda kv: -len(kv[0]))
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for old, new in ordered:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


#: name parts of nnU-Net's second names for one tensor (``decoder.encoder.*``, ``all_modules.<i>``)
_ALIAS_NAME_PARTS = ("decoder.encoder.", ".all_modules.")


def _is_alias_name(key: str) -> bool:
    """True for a checkpoint key that nnU-Net's U-Nets also store under another name (counted once in reports)."""
    return any(part in key for part in _ALIAS_NAME_PARTS)


def _shape_adapters(network: nn.Module, state: Mapping[str, torch.Tensor], options: AdaptOptions,
                    source_token_grid: Optional[Sequence[int]] = None) -> dict:
    """One adapter per network key whose checkpoint tensor has another shape (see :mod:`.adapt`)."""
    model_state = network.state_dict()
    roles = tensor_roles(network)
    grids = (source_token_grid, token_grid(network))

    def adapter(role: TensorRole):
        def run(checkpoint_tensor: torch.Tensor, model_tensor: torch.Tensor) -> Tuple[torch.Tensor, str]:
            try:
                return adapt_tensor(checkpoint_tensor, model_tensor, role, options, token_grids=grids)
            except NotAdaptable as reason:
                return checkpoint_tensor, str(reason)
        return run

    return {k: adapter(roles.get(k, TensorRole())) for k, v in state.items()
            if k in model_state and tuple(v.shape) != tuple(model_state[k].shape)}


def _alias_keys(network: nn.Module) -> set:
    """State-dict names that refer to a tensor already named earlier (nnU-Net's ``decoder.encoder.*``, ...)."""
    first_name: Dict[int, str] = {}
    aliases = set()
    for key, tensor in network.state_dict(keep_vars=True).items():
        if first_name.setdefault(id(tensor), key) != key:
            aliases.add(key)
    return aliases


def _count_aliases_as_loaded(network: nn.Module, report: LoadReport, aliases: set) -> None:
    """Report each tensor once: an alias of a loaded tensor is loaded, an alias of a missing one is not listed.

    nnU-Net's U-Nets register modules twice (``encoder.*`` and ``decoder.encoder.*``, ``conv`` and
    ``all_modules.0``): loading one name loads all of them, so aliases must not be reported as missing.
    """
    tensors = network.state_dict(keep_vars=True)
    loaded_ids = {id(tensors[k]) for k in report.loaded}
    report.loaded = report.loaded + [k for k in report.missing if k in aliases and id(tensors[k]) in loaded_ids]
    report.missing = [k for k in report.missing if k not in aliases]


def transfer_weights(network: nn.Module, source: StateDictSource, *,
                     prefix_map: Optional[Mapping[str, str]] = None,
                     exclude: Sequence[str] = DEFAULT_EXCLUDE,
                     head_patterns: Sequence[str] = HEAD_PATTERNS,
                     adapt: AdaptOptions = AdaptOptions(),
                     strict_shapes: bool = False,
                     min_fraction: float = 0.0,
                     source_name: Optional[str] = None) -> TransferReport:
    """Load the matching part of a pretrained checkpoint into ``network`` and report what happened.

    ``adapt``: which adaptation rules apply (``AdaptOptions(enabled=False)``: equal shapes only, no stage matching).
    ``min_fraction``: raise when fewer than this fraction of the network's parameters were loaded (a wrong file
    usually matches nothing; silently training from scratch would waste a run).
    """
    checkpoint = read_source(source)
    name = source_name or (str(source) if isinstance(source, (str, Path)) else checkpoint.source)
    state = checkpoint.tensors
    if prefix_map:
        state = rename_prefixes(state, prefix_map)
    excluded = [k for k in state if any(p in k for p in exclude)]
    skipped = sorted(set(excluded) | set(checkpoint.filtered))
    aliases = _alias_keys(network)  # other names of a tensor load through its first name
    kept = {k: v for k, v in state.items() if k not in set(excluded)}
    surplus: List[str] = []
    notes: List[str] = list(checkpoint.notes)
    if adapt.enabled:
        stages = match_stages(kept, network.state_dict().keys())
        kept, surplus = stages.state_dict, stages.surplus
        notes += stages.notes
    kept = {k: v for k, v in kept.items() if k not in aliases}
    surplus = [k for k in surplus if not _is_alias_name(k)]
    adapters = (_shape_adapters(network, kept, adapt, checkpoint.reading.metadata.get("token_grid"))
                if adapt.enabled else {})
    report = load_matching(network, kept, source=name, strict_shapes=strict_shapes, adapters=adapters,
                           skipped=skipped)
    _count_aliases_as_loaded(network, report, aliases)
    result = TransferReport.from_load_report(report, head_patterns, checkpoint=name)
    result.surplus, result.notes = surplus, notes
    if result.fraction_loaded < min_fraction:
        raise NotApplicableError(
            f"only {100 * result.fraction_loaded:.1f}% of the network's parameters were found in {name} "
            f"(required: {100 * min_fraction:.0f}%).\n{result}\nIs this the checkpoint of a network with the same "
            "plans? Align the plans (`nnunet-transfer align-plans`) or give a prefix map.")
    return result


def nnunet_pretrained_weights_report(network: nn.Module, checkpoint: StateDictSource) -> TransferReport:
    """What nnU-Net's own ``-pretrained_weights`` loads: every key but ``.seg_layers.`` with equal name and shape.

    Raises like nnU-Net would (naming the first offending key) when the checkpoint does not cover the network, so
    ``transfer-check`` can tell beforehand whether the nnU-Net path works or the plans record is needed. Loads those
    values into ``network`` (what nnU-Net does too).
    """
    source = read_source(checkpoint)
    if isinstance(checkpoint, SourceWeights):
        checkpoint = checkpoint.source
    if source.container != "memory" and (source.format != "nnunet_v2" or source.container != "file"):
        raise InvalidValueError(
            f"nnU-Net's -pretrained_weights reads only nnU-Net v2 checkpoint files; {checkpoint} is "
            f"{'a folder or zip' if source.container != 'file' else 'a ' + source.family + ' checkpoint'}"
            f". Use `nnunet-transfer set-pretrained {checkpoint} -d ID -c CONFIG -p PLANS`, then train "
            "without -pretrained_weights.")
    state = source.tensors
    model_state = network.state_dict()
    for key, value in model_state.items():
        if ".seg_layers." in key:
            continue
        if key not in state:
            raise MissingEntryError(
                f"nnU-Net's -pretrained_weights cannot load {checkpoint}: key {key} is missing there. "
                f"For partial or foreign checkpoints use a pretrained-weights record: `nnunet-transfer "
                f"set-pretrained {checkpoint} -d ID -c CONFIG -p PLANS` (or `align-plans --pretrained`), "
                "then train without -pretrained_weights.")
        if tuple(state[key].shape) != tuple(value.shape):
            raise InvalidValueError(
                f"nnU-Net's -pretrained_weights cannot load {checkpoint}: {key} has shape "
                f"{tuple(state[key].shape)} there but {tuple(value.shape)} in the network. Use "
                f"`nnunet-transfer set-pretrained {checkpoint} -d ID -c CONFIG -p PLANS` (adapts kernels, "
                "strides, stage count, feature counts and input channels), then train without "
                "-pretrained_weights.")
    # loading again is idempotent: nnU-Net puts exactly these values into the network
    return transfer_weights(network, state, exclude=(".seg_layers.",), adapt=AdaptOptions(enabled=False),
                            strict_shapes=True,
                            source_name=f"{checkpoint} (nnU-Net -pretrained_weights)")
