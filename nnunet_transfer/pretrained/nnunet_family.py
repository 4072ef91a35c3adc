"""Checkpoints of the nnU-Net family, read as data: nnU-Net v2 files, results folders and zips, v1 ``.model`` files,
nnssl checkpoints; plus any plain state dict. The transfer path reads every checkpoint through
:func:`read_source_checkpoint`.

Formats (from each project's own saving code):

- **nnU-Net v2** ``nnUNetTrainer.save_checkpoint``: ``{"network_weights", "optimizer_state", "grad_scaler_state",
  "logging", "_best_ema", "current_epoch", "init_args", "trainer_name", "inference_allowed_mirroring_axes"}``.
- **nnU-Net v2 results folder** (what ``nnUNetv2_export_model_to_zip`` packs and TotalSegmentator ships):
  ``[DatasetXXX_Name/]Trainer__Plans__configuration/{plans.json, dataset.json, fold_X/checkpoint_final.pth}``, as a
  folder or a zip of it. The fold is ``fold_0`` unless another is asked for (else the only one, or ``fold_all``).
- **nnU-Net v1** ``NetworkTrainer.save_checkpoint``: ``model_final_checkpoint.model`` = ``{"epoch", "state_dict",
  "optimizer_state_dict", "lr_scheduler_state_dict", "plot_stuff", "best_stuff"[, "amp_grad_scaler"]}`` (numpy
  numbers in the logs), and ``nnUNetTrainer.save_checkpoint`` adds ``<file>.pkl`` = ``OrderedDict(init, name,
  class, plans)`` written with ``pickle.dump``. ``Generic_UNet`` keys are renamed to the equivalent v2
  ``PlainConvUNet`` keys (:func:`generic_unet_v1_to_v2`); networks of their own (STU-Net, UniSeg) keep their keys,
  so what matches loads and the rest is reported.
- **nnssl** ``AbstractBaseTrainer.save_checkpoint``: the v2 layout plus ``"nnssl_adaptation_plan"`` (architecture,
  ``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``, pretraining plan). As nnU-Net's own nnssl fine-tuning,
  only the encoder and stem transfer; the pretext decoder is filtered out and reported.

Checkpoint files go through :func:`~nnunet_transfer.pretrained.safe_load.read_checkpoint_file` (``weights_only``),
the v1 ``.pkl`` through :func:`~nnunet_transfer.pretrained.data_only_pickle.read_data_only_pickle`, JSON as JSON.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from nnunet_transfer.pretrained.data_only_pickle import read_data_only_pickle
from nnunet_transfer.pretrained.safe_load import (CheckpointFormatError, find_state_dict, read_checkpoint_file,
                                                  strip_key_prefixes)
from nnunet_transfer.errors import InvalidValueError

V2_CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")
V1_CHECKPOINT_NAMES = ("model_final_checkpoint.model", "model_best.model", "model_latest.model")
KIND_V2, KIND_V1, KIND_NNSSL, KIND_STATE_DICT = "nnU-Net v2", "nnU-Net v1 (Generic_UNet)", "nnssl", "state dict"


@dataclass
class SourceCheckpoint:
    """A checkpoint read for transfer: its state dict (in v2 names), what it is, and what was left out and why."""

    source: str
    kind: str
    state_dict: Dict[str, torch.Tensor]
    #: checkpoint keys deliberately not offered for transfer (the nnssl pretext decoder)
    filtered: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: the source plans when the format carries them (results folder plans.json, v1 .pkl, nnssl plan)
    plans: Optional[Mapping[str, Any]] = None


# ---------------------------------------------------------------------------------------------- nnU-Net v1 names
_V1_CONTEXT = re.compile(r"^conv_blocks_context\.(\d+)\.blocks\.(\d+)\.(conv|instnorm)\.(.+)$")
_V1_TWO_PART = re.compile(r"^(conv_blocks_context|conv_blocks_localization)\.(\d+)\.([01])\.blocks\.(\d+)\."
                          r"(conv|instnorm)\.(.+)$")
_V1_SIMPLE = {re.compile(r"^tu\.(\d+)\.(.+)$"): "decoder.transpconvs.{0}.{1}",
              re.compile(r"^seg_outputs\.(\d+)\.(.+)$"): "decoder.seg_layers.{0}.{1}"}
_V1_LAYER = {"conv": "conv", "instnorm": "norm"}


def is_generic_unet_v1(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the keys are those of nnU-Net v1's ``Generic_UNet`` (or a network built like it)."""
    return any(k.startswith("conv_blocks_context.") for k in state_dict)


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


# ---------------------------------------------------------------------------------------------------- nnssl
def _from_nnssl(raw: Mapping[str, Any], source: str) -> SourceCheckpoint:
    plan = raw["nnssl_adaptation_plan"]
    if not isinstance(plan, Mapping):
        raise CheckpointFormatError(f"{source}: nnssl_adaptation_plan is a {type(plan).__name__}, not a dict")
    state = strip_key_prefixes(find_state_dict(raw, source=source))
    prefixes = [p for p in (plan.get("key_to_encoder"), plan.get("key_to_stem")) if p]
    if not prefixes:
        raise CheckpointFormatError(f"{source}: the nnssl adaptation plan names neither key_to_encoder nor key_to_stem")
    keep = {k: v for k, v in state.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}
    filtered = sorted(set(state) - set(keep))
    arch = (plan.get("architecture_plans") or {}).get("arch_class_name", "?")
    note = (f"nnssl checkpoint ({arch}, {raw.get('trainer_name', '?')}): only the encoder and stem transfer "
            f"({', '.join(prefixes)}), as in nnU-Net's nnssl fine-tuning; {len(filtered)} pretext tensors filtered "
            f"out; recommended downstream patch {plan.get('recommended_downstream_patchsize')}")
    return SourceCheckpoint(source, KIND_NNSSL, keep, filtered, [note], plan.get("pretrain_plan"))


# ------------------------------------------------------------------------------------------------- one file
def _from_file(file: Path, source: str, plans: Optional[Mapping[str, Any]] = None,
               notes: Sequence[str] = ()) -> SourceCheckpoint:
    raw = read_checkpoint_file(file)
    if isinstance(raw, Mapping) and "nnssl_adaptation_plan" in raw:
        return _from_nnssl(raw, source)
    state = strip_key_prefixes(find_state_dict(raw, source=source))
    kind = KIND_V2 if isinstance(raw, Mapping) and "network_weights" in raw else KIND_STATE_DICT
    notes = list(notes)
    if is_generic_unet_v1(state):
        state, renamed = generic_unet_v1_to_v2(state)
        kind = KIND_V1
        notes.append(f"nnU-Net v1 Generic_UNet keys mapped onto nnU-Net v2 PlainConvUNet keys ({renamed} renamed)")
        if file.suffix == ".model":
            info = read_v1_plans_pickle(file)
            if info is not None:
                plans = info.get("plans")
                notes.append(_v1_plans_note(info))
    return SourceCheckpoint(source, kind, state, notes=notes, plans=plans)


# ------------------------------------------------------------------------------------ results folders and zips
def _pick_fold(folds: Mapping[str, Any], fold: Optional[str], where: str) -> str:
    """The fold to read: the one asked for, else fold_0, else the only one, else fold_all."""
    if fold is not None:
        name = fold if str(fold).startswith("fold_") else f"fold_{fold}"
        if name not in folds:
            raise FileNotFoundError(f"{where} has no {name} with a checkpoint (has: {', '.join(sorted(folds))})")
        return name
    for name in ("fold_0", *(sorted(folds) if len(folds) == 1 else ()), "fold_all"):
        if name in folds:
            return name
    raise InvalidValueError(
        f"{where} has several folds ({', '.join(sorted(folds))}) and no fold_0; give one fold's "
        f"checkpoint file instead, e.g. {where}/{sorted(folds)[0]}/checkpoint_final.pth (from a zip: "
        "unzip it first)")


def _plans_note(plans: Mapping[str, Any], configuration: Optional[str]) -> str:
    config = (plans.get("configurations") or {}).get(configuration or "", {})
    arch = (config.get("architecture") or {}).get("arch_kwargs") or {}
    return (f"source plans {plans.get('plans_name', '?')} of {plans.get('dataset_name', '?')}, configuration "
            f"{configuration or '?'}: patch size {config.get('patch_size', '?')}, spacing {config.get('spacing', '?')}, "
            f"{arch.get('n_stages', '?')} stages, kernels {arch.get('kernel_sizes', '?')}")


def _model_folders(paths: Sequence[PurePosixPath]) -> Dict[PurePosixPath, Dict[str, PurePosixPath]]:
    """``{model folder: {fold name: checkpoint path}}`` for checkpoints laid out as ``<model>/fold_X/<name>``."""
    found: Dict[PurePosixPath, Dict[str, PurePosixPath]] = {}
    for names in (V2_CHECKPOINT_NAMES, V1_CHECKPOINT_NAMES):
        for name in names:
            for p in paths:
                if p.name == name and p.parent.name.startswith("fold_"):
                    found.setdefault(p.parent.parent, {}).setdefault(p.parent.name, p)
    return found


def _choose_model(found: Dict[PurePosixPath, Dict[str, PurePosixPath]], where: str) -> PurePosixPath:
    if not found:
        raise FileNotFoundError(f"{where} holds no fold_X/checkpoint_final.pth (nnU-Net v2) or "
                                "fold_X/model_final_checkpoint.model (v1); give the checkpoint file itself")
    if len(found) > 1:
        raise InvalidValueError(f"{where} holds several models ({', '.join(sorted(map(str, found)))}); give the model "
                                "folder (Trainer__Plans__configuration) instead")
    return next(iter(found))


def _configuration_of(model: PurePosixPath) -> Optional[str]:
    parts = model.name.split("__")
    return parts[-1] if len(parts) == 3 else None


def _from_results_folder(folder: Path, fold: Optional[str]) -> SourceCheckpoint:
    candidates = [PurePosixPath(p.relative_to(folder).as_posix()) for p in folder.glob("**/fold_*/*")
                  if len(p.relative_to(folder).parts) <= 5]
    model = _choose_model(_model_folders(candidates), str(folder))
    folds = _model_folders(candidates)[model]
    chosen = _pick_fold(folds, fold, str(folder / model))
    checkpoint = folder / folds[chosen]
    plans_file = folder / model / "plans.json"
    plans = json.loads(plans_file.read_text()) if plans_file.is_file() else None
    notes = [f"nnU-Net results folder {folder / model}: {chosen}"]
    if plans is not None:
        notes.append(_plans_note(plans, _configuration_of(PurePosixPath((folder / model).resolve().name))))
    return _from_file(checkpoint, str(checkpoint), plans, notes)


def _from_results_zip(archive: Path, fold: Optional[str]) -> SourceCheckpoint:
    with zipfile.ZipFile(archive) as zf:
        members = {PurePosixPath(n): n for n in zf.namelist() if not n.endswith("/")}
        found = _model_folders(list(members))
        model = _choose_model(found, str(archive))
        chosen = _pick_fold(found[model], fold, f"{archive}:{model}")
        member = members[found[model][chosen]]
        plans_member = members.get(model / "plans.json")
        plans = json.loads(zf.read(plans_member)) if plans_member else None
        notes = [f"nnU-Net model zip {archive}: {model}/{chosen}"]
        if plans is not None:
            notes.append(_plans_note(plans, _configuration_of(model)))
        with tempfile.TemporaryDirectory(prefix="nnunet_transfer_zip_") as tmp:
            # a fixed name inside our own folder: member names never become paths (no zip-slip)
            local = Path(tmp) / PurePosixPath(member).name
            with zf.open(member) as src, local.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            return _from_file(local, f"{archive}:{member}", plans, notes)


def read_source_checkpoint(path: Union[str, Path], fold: Optional[str] = None) -> SourceCheckpoint:
    """Read any supported checkpoint (file, nnU-Net results folder or zip) safely; see the module docstring."""
    path = Path(path)
    if path.is_dir():
        return _from_results_folder(path, fold)
    if path.suffix == ".zip" and path.is_file():
        if not zipfile.is_zipfile(path):
            raise CheckpointFormatError(f"{path} is not a zip archive; download or copy it again")
        return _from_results_zip(path, fold)
    plans_file = path.parent.parent / "plans.json"  # one fold's checkpoint inside a results folder
    if path.parent.name.startswith("fold_") and plans_file.is_file():
        plans = json.loads(plans_file.read_text())
        note = _plans_note(plans, _configuration_of(PurePosixPath(path.parent.parent.name)))
        return _from_file(path, str(path), plans, [note])
    return _from_file(path, str(path))
