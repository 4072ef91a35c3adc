"""A source checkpoint read once: the file, an nnU-Net results folder or a model zip in, one
:class:`~nnunet_transfer.pretrained.formats.base.SourceWeights` out.

The bytes of the checkpoint are read once into memory (a zip member: inflated with a bound), hashed, deserialised
without running code (``torch.load(weights_only=True)`` or safetensors), and handed to the first registered format
(:mod:`nnunet_transfer.pretrained.formats`) that recognises the object. Everything downstream (transfer report,
pretrained-weights record, trainers, ``transfer-check``, ``extract-encoder``) works from that object; nothing opens
the user's path again.

Containers (where the checkpoint sits):

- a checkpoint file (``.pth``, ``.pt``, ``.model``, ``.safetensors``); one fold's file inside a results folder also
  brings the folder's ``plans.json``;
- an **nnU-Net v2 results folder** (what ``nnUNetv2_export_model_to_zip`` packs and TotalSegmentator ships):
  ``[DatasetXXX_Name/]Trainer__Plans__configuration/{plans.json, dataset.json, fold_X/checkpoint_final.pth}``, as a
  folder or a zip of it. The fold is ``fold_0`` unless another is asked for (else the only one, or ``fold_all``).
  v1 folders (``fold_X/model_final_checkpoint.model``) likewise.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from nnunet_transfer.pretrained.formats import registered_formats
from nnunet_transfer.pretrained.formats.base import CheckpointFormat, FormatReading, SourceWeights
from nnunet_transfer.pretrained.formats.state_dict import FORMAT as PLAIN_STATE_DICT
from nnunet_transfer.pretrained.plans_check import check_foreign_plans, check_nnssl_architecture
from nnunet_transfer.pretrained.safe_load import (CheckpointFormatError, read_checkpoint_bytes, read_file_bytes,
                                                  read_torch_bytes_data_only)
from nnunet_transfer.utils.bounded_io import (DEFAULT_MAX_MEMBER_BYTES, MAX_JSON_BYTES, parse_json_bounded,
                                              read_json_bounded, read_zip_member)

__all__ = ["V2_CHECKPOINT_NAMES", "V1_CHECKPOINT_NAMES", "read_source_weights", "source_weights_from_bytes", "read_torch_checkpoint_once",
           "source_weights_from_state_dict", "recognise"]

V2_CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")
V1_CHECKPOINT_NAMES = ("model_final_checkpoint.model", "model_best.model", "model_latest.model")


def recognise(obj: Any, source: str) -> Tuple[CheckpointFormat, FormatReading]:
    """The first registered format that recognises ``obj`` and its reading."""
    for fmt in registered_formats():
        if fmt.detect(obj):
            return fmt, fmt.read(obj, source)
    raise CheckpointFormatError(f"{source} is in no format nnunet-transfer knows", file=source,
                                fix="save the weights as torch.save({'state_dict': model.state_dict()}, path)")


def source_weights_from_bytes(data: bytes, source: str, *, file: Optional[Path] = None,
                              plans: Optional[Mapping[str, Any]] = None, notes: Sequence[str] = (),
                              container: str = "file", torch_only: bool = False,
                              trusted: Sequence[str] = (), plans_source: Optional[str] = None) -> SourceWeights:
    """Deserialise checkpoint bytes already read (safely), recognise their format and read them.

    ``torch_only``: deserialise with ``torch.load(weights_only=True)`` whatever the name (what nnU-Net's loaders
    do), never as safetensors. Plans that come with the checkpoint (a results folder's plans.json, an nnssl
    adaptation plan) are checked as data (:mod:`~nnunet_transfer.pretrained.plans_check`); ``trusted``: class names
    the user trusts (``--trust-architecture``).

    ``plans``/``notes``: what the container says (a results folder's plans.json). The format's companion files
    (nnU-Net v1's ``.pkl``) are read next to ``file`` when given.
    """
    digest = hashlib.sha256(data).hexdigest()
    obj = read_torch_bytes_data_only(data, source) if torch_only else read_checkpoint_bytes(data, source)
    fmt, reading = recognise(obj, source)
    reading.notes = list(notes) + reading.notes
    if fmt.companion is not None and file is not None:
        companion_plans, companion_notes = fmt.companion(file)
        reading.notes += companion_notes
        plans = companion_plans if companion_plans is not None else plans
    if fmt.name == "nnssl":
        check_nnssl_architecture(reading.metadata.get("architecture_plans"), source, trusted)
    if reading.plans is None:
        reading.plans = plans
    if reading.plans is not None and fmt.companion is None:  # v1 plans (its .pkl) never reach nnU-Net v2's code
        check_foreign_plans(reading.plans, plans_source if reading.plans is plans and plans_source else source,
                            trusted)
    return SourceWeights(source, digest, fmt.name, fmt.family, reading, file=None if file is None else str(file),
                         container=container)


def read_torch_checkpoint_once(path: Union[str, Path]) -> SourceWeights:
    """A checkpoint file that nnU-Net's own loaders will also take (``-pretrained_weights``), read once and checked
    as ``torch.load(weights_only=True)`` data whatever its name."""
    path = Path(path)
    return source_weights_from_bytes(read_file_bytes(path), str(path), file=path, torch_only=True)


def source_weights_from_state_dict(state_dict: Mapping[str, torch.Tensor], name: str = "state dict") -> SourceWeights:
    """An in-memory (possibly wrapped) state dict as source weights (no bytes, so no sha256), taken as it is: the
    plain state-dict format, no format-specific renaming or filtering."""
    fmt = PLAIN_STATE_DICT
    return SourceWeights(name, "", fmt.name, fmt.family, fmt.read(state_dict, name), container="memory")


def _read_file(path: Path, plans: Optional[Mapping[str, Any]] = None, notes: Sequence[str] = (),
               container: str = "file", trusted: Sequence[str] = (), plans_source: Optional[str] = None
               ) -> SourceWeights:
    return source_weights_from_bytes(read_file_bytes(path), str(path), file=path, plans=plans, notes=notes,
                                     container=container, trusted=trusted, plans_source=plans_source)


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
    raise CheckpointFormatError(
        f"{where} has several folds ({', '.join(sorted(folds))}) and no fold_0", file=where,
        fix=f"give one fold's checkpoint file instead, e.g. {where}/{sorted(folds)[0]}/checkpoint_final.pth (from a "
            "zip: unzip it first)")


def _as_dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _plans_note(plans: Any, configuration: Optional[str]) -> str:
    plans = _as_dict(plans)
    config = _as_dict(_as_dict(plans.get("configurations")).get(configuration or ""))
    arch = _as_dict(_as_dict(config.get("architecture")).get("arch_kwargs"))
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
        raise CheckpointFormatError(f"{where} holds several models ({', '.join(sorted(map(str, found)))})", file=where,
                                  fix="give the model folder (Trainer__Plans__configuration) instead")
    return next(iter(found))


def _configuration_of(model: PurePosixPath) -> Optional[str]:
    parts = model.name.split("__")
    return parts[-1] if len(parts) == 3 else None


def _from_results_folder(folder: Path, fold: Optional[str], trusted: Sequence[str]) -> SourceWeights:
    candidates = [PurePosixPath(p.relative_to(folder).as_posix()) for p in folder.glob("**/fold_*/*")
                  if len(p.relative_to(folder).parts) <= 5]
    model = _choose_model(_model_folders(candidates), str(folder))
    folds = _model_folders(candidates)[model]
    chosen = _pick_fold(folds, fold, str(folder / model))
    checkpoint = folder / folds[chosen]
    plans_file = folder / model / "plans.json"
    plans = read_json_bounded(plans_file) if plans_file.is_file() else None
    notes = [f"nnU-Net results folder {folder / model}: {chosen}"]
    if plans is not None:
        notes.append(_plans_note(plans, _configuration_of(PurePosixPath((folder / model).resolve().name))))
    return _read_file(checkpoint, plans, notes, container="results folder", trusted=trusted,
                      plans_source=str(plans_file))


def _from_results_zip(archive: Path, fold: Optional[str], max_member_bytes: int,
                      trusted: Sequence[str]) -> SourceWeights:
    with zipfile.ZipFile(archive) as zf:
        members = {PurePosixPath(n): n for n in zf.namelist() if not n.endswith("/")}
        found = _model_folders(list(members))
        model = _choose_model(found, str(archive))
        chosen = _pick_fold(found[model], fold, f"{archive}:{model}")
        member = members[found[model][chosen]]
        plans_member = members.get(model / "plans.json")
        plans, source = None, None
        if plans_member:
            source = f"{archive}:{plans_member}"
            plans = parse_json_bounded(read_zip_member(zf, plans_member, str(archive), MAX_JSON_BYTES), source)
        notes = [f"nnU-Net model zip {archive}: {model}/{chosen}"]
        if plans is not None:
            notes.append(_plans_note(plans, _configuration_of(model)))
        # the member is inflated into memory with a bound: member names never become paths (no zip-slip)
        data = read_zip_member(zf, member, str(archive), max_member_bytes)
        return source_weights_from_bytes(data, f"{archive}:{member}", plans=plans, notes=notes, container="zip",
                                         trusted=trusted, plans_source=source)


def read_source_weights(path: Union[str, Path], fold: Optional[str] = None,
                        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, trusted: Sequence[str] = ()) -> SourceWeights:
    """Read any supported checkpoint (file, nnU-Net results folder or zip) once and safely; see the module
    docstring. ``trusted``: architecture class names the user trusts in plans that come with it."""
    path = Path(path)
    if path.is_dir():
        return _from_results_folder(path, fold, trusted)
    if path.suffix.lower() == ".zip" and path.is_file():
        if not zipfile.is_zipfile(path):
            raise CheckpointFormatError(f"{path} is not a zip archive; download or copy it again", file=path)
        return _from_results_zip(path, fold, max_member_bytes, trusted)
    plans_file = path.parent.parent / "plans.json"  # one fold's checkpoint inside a results folder
    if path.parent.name.startswith("fold_") and plans_file.is_file():
        plans = read_json_bounded(plans_file)
        note = _plans_note(plans, _configuration_of(PurePosixPath(path.parent.parent.name)))
        return _read_file(path, plans, [note], trusted=trusted, plans_source=str(plans_file))
    return _read_file(path, trusted=trusted)
