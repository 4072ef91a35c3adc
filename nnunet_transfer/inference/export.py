"""Ship a trained model as one zip and predict with it in a challenge container.

Built on nnU-Net's own model sharing (``nnunetv2.model_sharing``, the code behind
``nnUNetv2_export_model_to_zip`` and ``nnUNetv2_install_pretrained_model_from_zip``): the zip is nnU-Net's, so a
receiver without nnunet-transfer can still install it with nnU-Net alone. We add:

- before exporting, a check that nnU-Net can find the trainer class by name (prediction rebuilds the network
  through it) and where it comes from: nnU-Net itself, nnunet-transfer (the receiver needs this package and
  ``nnUNet_extTrainer``), or somewhere else (then its code must be shipped separately: we warn and say so in
  the manifest and the README);
- before exporting, a check that each checkpoint holds data only (see below) and belongs to the trainer;
- ``nnunet_transfer_export.json`` (the manifest: versions, trainer, configurations, folds, one sha256 per
  checkpoint, the exact predict commands) and ``README_predict.txt`` at the root of the zip.

:func:`install_and_predict` installs a zip (into a temporary ``nnUNet_results`` when none is given), makes our
trainers discoverable and runs ``nnUNetPredictor``, set up from checked plans and weights read as data
(:mod:`~nnunet_transfer.inference.checked_predictor`). :func:`install_model` extracts the zip our way into a hidden
staging folder inside ``nnUNet_results`` (:mod:`~nnunet_transfer.inference.model_zip`: bounded sizes, every member's
checksum, checkpoints read as data, plans.json checked as data; nnU-Net's ``extractall`` never sees the zip) and only
then renames the model folders into place: a refused zip leaves nothing behind, and an existing, different model of
the same name is replaced only with ``force``.

Safety: nnU-Net's predictor fully unpickles checkpoints (no weights-only restriction). Before handing one to it we
load it with ``torch.load(weights_only=True)``, allowing only numpy's scalar and numeric dtype reconstructors (nnU-Net
logs numpy floats into every checkpoint). A pickle that this restricted unpickler accepts references no other
Python object, so the full unpickle that follows runs no foreign code. The checksums guard against corrupted or
mixed-up files, not against a malicious zip (the manifest travels in the same zip); the data-only check does.

nnU-Net reads its path variables lazily (``nnunetv2.paths`` holds ``_EnvPath`` objects that look at ``os.environ``
on every use), so setting ``os.environ`` for the duration of a call is enough and no nnU-Net module is patched.

Size: about 633 lines, as export and install are two halves of one format (the zip and its manifest); the zip's
reading itself is in inference/model_zip.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import tempfile
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Optional, Sequence, Union

import torch

import nnunet_transfer
from nnunet_transfer.dataset_lookup import dataset_name as resolve_dataset_name
from nnunet_transfer.discovery import EXT_TRAINER_VARIABLE, environment_variables, ext_trainer_value
from nnunet_transfer.errors import InvalidValueError, NnUNetTransferError, NotApplicableError, did_you_mean
from nnunet_transfer.inference.checked_predictor import initialize_checked_predictor
from nnunet_transfer.inference.install_leftovers import (aside_name, clean_install_staging, clean_partial_zips,
                                                         install_staging_prefix, partial_zip,
                                                         recover_replaced_models)
from nnunet_transfer.inference.model_zip import MANIFEST_NAME, ChecksumMismatchError, extract_checked_zip, member_digests
from nnunet_transfer.inference.postprocessing import POSTPROCESSING_JSON, apply_model_postprocessing
from nnunet_transfer.pretrained.safe_load import (UnreadableCheckpointError, UnsafeCheckpointError,
                                                  read_checkpoint_file)
from nnunet_transfer.utils.atomic import swap_into_place
from nnunet_transfer.utils.bounded_io import DEFAULT_MAX_MEMBER_BYTES, MAX_JSON_BYTES, read_zip_member
from nnunet_transfer.utils.hashing import sha256_of_file, sha256_of_stream
from nnunet_transfer.utils.json_files import ListOf, parse_json_object, require_entries
from nnunet_transfer.utils.locks import exclusive_lock, lock_file_for

__all__ = [
    "MANIFEST_NAME",
    "README_NAME",
    "ChecksumMismatchError",
    "TrainerInfo",
    "find_trainer",
    "export_model",
    "read_manifest",
    "install_model",
    "install_and_predict",
]

README_NAME = "README_predict.txt"
MANIFEST_FORMAT = "nnunet_transfer_export"
#: version 2 lists the sha256 of every member (``members_sha256``); version 1 (checkpoints only) still installs
MANIFEST_VERSION = 2
READABLE_MANIFEST_VERSIONS = (1, 2)
RESULTS_VARIABLE = "nnUNet_results"

PathLike = Union[str, os.PathLike]


class ModelExistsError(NnUNetTransferError, FileExistsError):
    """Installing would replace a different model of the same name in ``nnUNet_results`` (pass ``force``)."""


class TrainerNotFoundError(NnUNetTransferError, LookupError):
    """nnU-Net cannot find a trainer class of this name."""


# ----------------------------------------------------------------------------------------------------------
# environment and trainer discovery
# ----------------------------------------------------------------------------------------------------------

def _nnunet_environment(results_dir: Optional[Path] = None) -> ContextManager[None]:
    """Within the block, ``nnUNet_extTrainer`` includes our trainer folder and (if given) ``nnUNet_results`` is
    ``results_dir``; the previous values are restored afterwards."""
    values = {EXT_TRAINER_VARIABLE: ext_trainer_value(os.environ.get(EXT_TRAINER_VARIABLE))}
    if results_dir is not None:
        values[RESULTS_VARIABLE] = str(Path(results_dir).resolve())
    return environment_variables(values)


def _trainer_names() -> list[str]:
    """Names of nnU-Net's and our trainer classes (for close-match suggestions)."""
    import nnunetv2.training.nnUNetTrainer as nnunet_trainers
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    import nnunet_transfer.trainers as ours

    names = set(ours.__all__)
    folder = Path(nnunet_trainers.__file__).parent
    for path in folder.rglob("*.py"):  # class names only, from the source text: importing them all is slow
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("class ") and "(" in line:
                names.add(line[6:line.index("(")].strip())
    names.add(nnUNetTrainer.__name__)
    return sorted(names)


@dataclass(frozen=True)
class TrainerInfo:
    """Where nnU-Net finds a trainer class: ``source`` is ``"nnunetv2"``, ``"nnunet_transfer"`` or ``"external"``."""

    name: str
    module: str
    source: str

    @property
    def needs_nnunet_transfer(self) -> bool:
        return self.source == "nnunet_transfer"

    @property
    def shipped_separately(self) -> bool:
        """True when neither nnU-Net nor nnunet-transfer provides the class: the receiver needs its code too."""
        return self.source == "external"


def find_trainer(trainer_name: str) -> TrainerInfo:
    """Look ``trainer_name`` up the way nnU-Net's training and prediction do (with our trainer folder in
    ``nnUNet_extTrainer``) and say where it comes from. Raises ``LookupError`` when nnU-Net cannot find it."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with _nnunet_environment():
        try:
            cls = recursive_find_trainer_class_by_name(trainer_name)
        except RuntimeError as exc:
            raise TrainerNotFoundError(
                f"nnU-Net cannot find the trainer class {trainer_name!r}{did_you_mean(trainer_name, _trainer_names())}"
                f" (searched nnunetv2.training.nnUNetTrainer and "
                f"nnUNet_extTrainer={os.environ.get(EXT_TRAINER_VARIABLE, '')!r}). Check the name, or add the "
                f"folder holding its module to nnUNet_extTrainer; the receiver of the model will need it as well."
            ) from exc
    module = cls.__module__
    if module == "nnunetv2" or module.startswith("nnunetv2."):
        source = "nnunetv2"
    elif module == "nnunet_transfer" or module.startswith("nnunet_transfer."):
        source = "nnunet_transfer"
    else:
        source = "external"
    return TrainerInfo(name=trainer_name, module=module, source=source)


# ----------------------------------------------------------------------------------------------------------
# checkpoints: checksums and the data-only check
# ----------------------------------------------------------------------------------------------------------

def _load_data_only(path: Path) -> dict:
    """Load an nnU-Net checkpoint with ``weights_only=True`` (plus numpy numbers); refuse anything else."""
    try:
        obj = read_checkpoint_file(path)
    except (UnsafeCheckpointError, UnreadableCheckpointError) as exc:  # foreign objects, or a damaged file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UnsafeCheckpointError(
            f"refused to use checkpoint {path}: it does not load as plain data with torch.load(weights_only=True) "
            f"({type(exc).__name__}: {detail}). nnU-Net's predictor would unpickle it fully, which can run "
            f"arbitrary code. Re-export the model from a trusted training run."
        ) from exc
    if not isinstance(obj, dict) or not {"network_weights", "init_args", "trainer_name"} <= set(obj):
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise UnsafeCheckpointError(
            f"{path} is not an nnU-Net training checkpoint: it lacks 'network_weights', 'init_args' or "
            f"'trainer_name' (found {keys}); export checkpoints written by nnUNetv2_train"
        )
    return obj


# ----------------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------------

def _fold_folder(fold: Union[int, str]) -> str:
    return "fold_all" if str(fold) == "all" else f"fold_{int(fold)}"


def _fold_value(fold: Union[int, str]) -> Union[int, str]:
    return "all" if str(fold) == "all" else int(fold)


def _predict_command(dataset: str, configuration: str, trainer: str, plans: str, folds: Sequence,
                     checkpoint: str) -> str:
    parts = ["nnUNetv2_predict", "-i", "INPUT_FOLDER", "-o", "OUTPUT_FOLDER", "-d", dataset, "-c", configuration,
             "-tr", trainer, "-p", plans, "-f", *[str(f) for f in folds], "-chk", checkpoint]
    return " ".join(shlex.quote(p) for p in parts)


def _check_model_folder(model_dir: Path, configuration: str, trainer: str, folds: Sequence,
                        checkpoint: str) -> list[Path]:
    """Everything nnU-Net's exporter copies must exist; return the checkpoint paths. Also check each checkpoint
    is data only and was written by ``trainer`` for ``configuration``."""
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"no trained model folder {model_dir}: train configuration {configuration!r} with trainer {trainer!r} "
            f"first (nnUNetv2_train ... -tr {trainer}), or fix the dataset/trainer/plans/configuration names"
        )
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name} is missing; nnUNetv2_train writes it, copy it back")
    checkpoints = []
    for fold in folds:
        fold_dir = model_dir / _fold_folder(fold)
        ckpt = fold_dir / checkpoint
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"{ckpt} is missing: fold {fold} of {configuration!r} is not trained to the end; finish it or "
                f"export only the trained folds (-f FOLD ..., Python: folds=...)"
            )
        for name, fix in (("progress.png", "it is written during training"),
                          ("validation/summary.json", f"run the validation: nnUNetv2_train ... {fold} --val")):
            if not (fold_dir / name).is_file():
                raise FileNotFoundError(f"{fold_dir / name} is missing (nnU-Net's exporter needs it); {fix}")
        content = _load_data_only(ckpt)
        if content["trainer_name"] != trainer:
            raise InvalidValueError(f"{ckpt} was written by trainer {content['trainer_name']!r}, not {trainer!r}")
        ckpt_configuration = content["init_args"].get("configuration")
        if ckpt_configuration != configuration:
            raise InvalidValueError(f"{ckpt} belongs to configuration {ckpt_configuration!r}, not {configuration!r}")
        checkpoints.append(ckpt)
    return checkpoints


def _package_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _readme(manifest: dict, dataset_json: dict) -> str:
    trainer = manifest["trainer"]
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    ending = dataset_json.get("file_ending", ".nii.gz")
    lines = [
        f"Trained nnU-Net model: {manifest['dataset']}, trainer {trainer}, plans {manifest['plans']},",
        f"configurations {', '.join(manifest['configurations'])}, folds {' '.join(map(str, manifest['folds']))},",
        f"exported by nnunet-transfer {manifest['plugin_version']} with nnunetv2 {manifest['nnunetv2_version']}.",
        "",
        "Input images: one file per case and channel, named CASE_XXXX" + ending + " where XXXX is the channel:",
        *[f"  {int(k):04d}: {v}" for k, v in sorted(channels.items(), key=lambda kv: int(kv[0]))],
        "",
        "Predict with nnunet-transfer (verifies the checksums, installs into $nnUNet_results when it is set, else",
        "into a temporary folder removed afterwards, and applies the model's postprocessing when it has one):",
        f"  pip install nnunetv2=={manifest['nnunetv2_version']} nnunet-transfer=={manifest['plugin_version']}",
        "  nnunet-transfer predict-export MODEL.zip -i INPUT_FOLDER -o OUTPUT_FOLDER -device cuda",
        "  (in Python: nnunet_transfer.inference.export.install_and_predict('MODEL.zip', 'INPUT_FOLDER', 'OUTPUT_FOLDER', "
        "device='cuda'))",
        "",
        "Predict with nnU-Net's own commands:",
        "  export nnUNet_results=/path/to/results",
        "  nnUNetv2_install_pretrained_model_from_zip MODEL.zip",
    ]
    if manifest["trainer_source"] == "nnunet_transfer":
        lines.append(f"  eval \"$(nnunet-transfer env)\"   # {trainer} is an nnunet-transfer trainer: "
                     f"adds its folder to nnUNet_extTrainer")
    for configuration, command in manifest["predict_commands"].items():
        lines.append(f"  {command}")
    if manifest["trainer_source"] == "external":
        lines += [
            "",
            f"WARNING: trainer {trainer} (module {manifest['trainer_module']}) is neither part of nnU-Net nor of",
            "nnunet-transfer. Its code is NOT in this zip: ship it separately and add the folder holding its module",
            "to the nnUNet_extTrainer environment variable before predicting.",
        ]
    lines += ["", f"sha256 of the checkpoints: see {MANIFEST_NAME}.", ""]
    return "\n".join(lines)


def export_model(dataset: Union[str, int], configurations: Sequence[str], trainer: str,
                 plans: str = "nnUNetPlans", folds: Sequence[Union[int, str]] = (0, 1, 2, 3, 4), *,
                 output_zip: PathLike, checkpoint: str = "checkpoint_final.pth",
                 results_dir: Optional[PathLike] = None) -> Path:
    """Pack a trained model into ``output_zip`` with nnU-Net's exporter and add our manifest and README.

    ``dataset`` is a dataset name or id, looked up in ``nnUNet_results`` (or ``results_dir`` when given).
    Exports ``checkpoint`` of every fold in ``folds`` for each configuration, with plans.json, dataset.json,
    dataset_fingerprint.json, progress.png and validation summaries (what nnU-Net's exporter takes).
    Raises ``LookupError`` for a trainer nnU-Net cannot find, ``FileNotFoundError`` for missing files, and warns
    when the trainer's code must be shipped separately. Returns the path of the zip.
    """
    from nnunetv2.model_sharing.model_export import export_pretrained_model
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    configurations = [str(c) for c in configurations]
    folds = [_fold_value(f) for f in folds]
    if not configurations or not folds:
        raise InvalidValueError("export_model needs at least one configuration and one fold")
    output_zip = Path(output_zip).resolve()
    if output_zip.suffix != ".zip":
        raise InvalidValueError(f"output_zip {output_zip} must end with .zip (nnU-Net's installer expects a zip file)")

    info = find_trainer(trainer)
    if info.shipped_separately:
        warnings.warn(
            f"trainer {trainer!r} comes from module {info.module!r}, which is neither nnU-Net nor nnunet-transfer: "
            f"the zip does not contain its code; ship it separately (the receiver must add its folder to "
            f"nnUNet_extTrainer)", stacklevel=2)

    with _nnunet_environment(Path(results_dir) if results_dir is not None else None):
        if not os.environ.get(RESULTS_VARIABLE):
            raise NotApplicableError("nnUNet_results is not set: set it to your results folder or pass results_dir=")
        results = Path(os.environ[RESULTS_VARIABLE]).resolve()
        dataset_name = resolve_dataset_name(dataset)
        model_dirs = {c: Path(get_output_folder(dataset_name, trainer, plans, c)).resolve() for c in configurations}
        for c, model_dir in model_dirs.items():
            _check_model_folder(model_dir, c, trainer, folds, checkpoint)

        output_zip.parent.mkdir(parents=True, exist_ok=True)
        clean_partial_zips(output_zip)  # what killed exports to the same file left behind
        partial = partial_zip(output_zip)
        try:
            export_pretrained_model(dataset_name, str(partial), configurations=tuple(configurations),
                                    trainer=trainer, plans_identifier=plans, folds=tuple(folds), strict=True,
                                    save_checkpoints=(checkpoint,))
            checksums = {}
            with zipfile.ZipFile(partial, "r") as zf:
                for c, model_dir in model_dirs.items():
                    for fold in folds:
                        member = (model_dir / _fold_folder(fold) / checkpoint).relative_to(results).as_posix()
                        with zf.open(member) as f:
                            checksums[member] = sha256_of_stream(f)
            manifest = {
                "format": MANIFEST_FORMAT,
                "format_version": MANIFEST_VERSION,
                "plugin": "nnunet-transfer",
                "plugin_version": nnunet_transfer.__version__,
                "nnunetv2_version": _package_version("nnunetv2"),
                "torch_version": torch.__version__,
                "dataset": dataset_name,
                "trainer": trainer,
                "trainer_source": info.source,
                "trainer_module": info.module,
                "plans": plans,
                "configurations": configurations,
                "folds": folds,
                "checkpoint": checkpoint,
                "checkpoint_sha256": checksums,
                "predict_commands": {c: _predict_command(dataset_name, c, trainer, plans, folds, checkpoint)
                                     for c in configurations},
            }
            dataset_json = json.loads((model_dirs[configurations[0]] / "dataset.json").read_text())
            readme = _readme(manifest, dataset_json)
            with zipfile.ZipFile(partial, "r") as zf:  # every member hashed: install verifies all of them
                members = member_digests(zf)
            members[README_NAME] = hashlib.sha256(readme.encode()).hexdigest()
            manifest["members_sha256"] = members
            with zipfile.ZipFile(partial, "a", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
                zf.writestr(README_NAME, readme)
            os.replace(partial, output_zip)
        finally:
            if partial.exists():
                partial.unlink()
    return output_zip


# ----------------------------------------------------------------------------------------------------------
# install and predict
# ----------------------------------------------------------------------------------------------------------

def _manifest_of(zf: zipfile.ZipFile, zip_path: Path) -> dict:
    """The manifest of an open model zip (bounded, checked to be ours and of a version we read)."""
    if MANIFEST_NAME not in zf.namelist():
        raise InvalidValueError(
            f"{zip_path} has no {MANIFEST_NAME}: it was not exported by nnunet-transfer. Install it with "
            f"nnUNetv2_install_pretrained_model_from_zip and predict with nnUNetv2_predict instead."
        )
    source = f"{zip_path}:{MANIFEST_NAME}"
    manifest = parse_json_object(read_zip_member(zf, MANIFEST_NAME, str(zip_path), MAX_JSON_BYTES), source,
                                 _MANIFEST_FIX)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("format_version") not in READABLE_MANIFEST_VERSIONS:
        raise InvalidValueError(
            f"{zip_path}: manifest format {manifest.get('format')!r} version {manifest.get('format_version')!r} "
            f"is not {MANIFEST_FORMAT!r} version {MANIFEST_VERSION}; use the nnunet-transfer version that exported "
            f"it ({manifest.get('plugin_version')})"
        )
    require_entries(manifest, _MANIFEST_ENTRIES, source, _MANIFEST_FIX)
    names = [manifest[k] for k in ("dataset", "trainer", "plans", "checkpoint")] + manifest["configurations"]
    bad = [n for n in names if not _PLAIN_NAME.match(n) or n in (".", "..")]
    if bad:
        raise InvalidValueError(f"{source}: {bad[0]!r} is not a plain name", file=zip_path, fix=_MANIFEST_FIX)
    return manifest


_MANIFEST_FIX = "download or export the model zip again (the manifest is written by nnunet-transfer export)"
#: what the rest of install and predict reads from a manifest
_MANIFEST_ENTRIES = {"dataset": str, "trainer": str, "plans": str, "configurations": ListOf(str),
                     "folds": ListOf((int, str)), "checkpoint": str, "trainer_source": str, "plugin_version": str}
#: dataset, trainer, plans, configuration and checkpoint names become path components
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@contextlib.contextmanager
def _open_model_zip(zip_path: Path):
    """The zip opened once (what is checked and what is extracted come from the same open file)."""
    if not zip_path.is_file():
        raise FileNotFoundError(f"model zip {zip_path} does not exist")
    try:
        zf = zipfile.ZipFile(zip_path, "r")
    except (zipfile.BadZipFile, OSError) as exc:
        raise NnUNetTransferError(f"{zip_path} is not a readable model zip ({type(exc).__name__}: {exc})",
                                  file=zip_path, fix="download or export the model zip again") from exc
    with zf:
        yield zf


def read_manifest(zip_path: PathLike) -> dict:
    """The manifest of a zip written by :func:`export_model`; raises ``ValueError`` for other zips."""
    zip_path = Path(zip_path)
    with _open_model_zip(zip_path) as zf:
        return _manifest_of(zf, zip_path)


def _same_content(new: Path, old: Path) -> bool:
    """True when every file under ``new`` exists under ``old`` with the same bytes (and both are the same kind)."""
    if new.is_file() or old.is_file():
        return new.is_file() and old.is_file() and sha256_of_file(new) == sha256_of_file(old)
    for path in new.rglob("*"):
        if path.is_file():
            other = old / path.relative_to(new)
            if not other.is_file() or sha256_of_file(path) != sha256_of_file(other):
                return False
    return True


def _publish(staged: Path, target: Path, force: bool) -> None:
    """Rename ``staged`` to ``target``; an existing different ``target`` only with ``force`` (then it is removed
    after the new one is in place); an identical one is kept."""
    if target.exists() or target.is_symlink():
        if _same_content(staged, target):
            return
        if not force:
            raise ModelExistsError(
                f"{target} already holds a different model; installing would replace it", file=target,
                fix="pass --force (predict-export) / force=True to replace it, or set nnUNet_results to another "
                    "folder")
        old = swap_into_place(staged, target, aside_name(target, uuid.uuid4().hex[:8]))
        shutil.rmtree(old) if old.is_dir() else old.unlink()
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, target)


def install_model(zip_path: PathLike, results_dir: PathLike, *, force: bool = False, trusted: Sequence[str] = (),
                  max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> dict:
    """Install an exported zip into ``results_dir`` (the layout nnU-Net's installer produces); return the manifest.

    The zip is opened once and extracted our way (:func:`~nnunet_transfer.inference.model_zip.extract_checked_zip`:
    names, declared and inflated sizes, every member's sha256, checkpoints read as data, plans.json checked as data
    with the ``trusted`` architecture names) into a hidden staging folder inside ``results_dir``; only then are its
    dataset entries renamed into place: nothing of a refused zip is installed. An existing entry with other content
    is replaced only with ``force`` (:class:`ModelExistsError` otherwise); an identical one is left as it is.
    """
    zip_path = Path(zip_path).resolve()
    with _open_model_zip(zip_path) as zf:
        manifest = _manifest_of(zf, zip_path)
        results = Path(results_dir).resolve()
        results.mkdir(parents=True, exist_ok=True)
        dataset = manifest["dataset"]
        # one install per dataset of nnUNet_results at a time; the replace check (_publish) runs under the lock
        with exclusive_lock(lock_file_for(results, dataset), f"the models of {dataset} in {results}"):
            clean_install_staging(results)  # what killed installs left behind
            staging = Path(tempfile.mkdtemp(prefix=install_staging_prefix(), dir=results))
            try:
                extract_checked_zip(zf, zip_path, staging, manifest, skip=(MANIFEST_NAME,),
                                    max_member_bytes=max_member_bytes, trusted=trusted)
                for dataset_dir in sorted(p for p in staging.iterdir() if p.is_dir()):
                    recover_replaced_models(results / dataset_dir.name)
                    for entry in sorted(dataset_dir.iterdir()):
                        _publish(entry, results / dataset_dir.name / entry.name, force)
            finally:
                shutil.rmtree(staging)
    return manifest


def _input_cases(input_dir: Path, dataset_json: dict) -> list[list[str]]:
    """Group ``input_dir``'s files into cases (CASE_XXXX<file_ending>), checking every channel is there."""
    ending = dataset_json["file_ending"]
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    n_channels = len(channels)
    cases: dict[str, dict[int, str]] = {}
    for f in sorted(input_dir.iterdir()):
        name = f.name
        if not f.is_file() or not name.endswith(ending) or len(name) < len(ending) + 5:
            continue
        stem = name[: -len(ending)]
        if stem[-5] != "_" or not stem[-4:].isdigit():
            continue
        cases.setdefault(stem[:-5], {})[int(stem[-4:])] = str(f)
    if not cases:
        raise FileNotFoundError(
            f"no input images in {input_dir}: expected files named CASE_0000{ending} (channel index after the "
            f"case name, {n_channels} channel(s): {channels}); rename the inputs accordingly"
        )
    out = []
    for case, by_channel in cases.items():
        missing = [c for c in range(n_channels) if c not in by_channel]
        if missing:
            raise FileNotFoundError(
                f"case {case!r} in {input_dir} lacks channel(s) {missing}: expected "
                f"{', '.join(f'{case}_{c:04d}{ending}' for c in range(n_channels))}"
            )
        out.append([by_channel[c] for c in range(n_channels)])
    return out


def _torch_device(device: Union[str, torch.device]) -> torch.device:
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise InvalidValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NotApplicableError(f"device {device!r} requested but torch sees no CUDA GPU; use -device cpu "
                                 f"(Python: device='cpu')")
    return dev


def install_and_predict(zip_path: PathLike, input_dir: PathLike, output_dir: PathLike,
                        device: Union[str, torch.device] = "cpu", workspace: Optional[PathLike] = None,
                        folds: Optional[Sequence[Union[int, str]]] = None, *, configuration: Optional[str] = None,
                        num_processes: int = 2, tile_step_size: float = 0.5, use_mirroring: bool = True,
                        force: bool = False, trusted: Sequence[str] = (),
                        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Path:
    """Install a model zip written by :func:`export_model` and segment every case of ``input_dir``.

    The zip is installed with :func:`install_model` (verified before anything is installed; ``force`` replaces a
    different model of the same name) into ``workspace/nnUNet_results`` (``workspace`` given), else
    into ``$nnUNet_results`` (set), else into a temporary folder removed afterwards. Our trainer
    folder is added to ``nnUNet_extTrainer``, and ``nnUNetPredictor`` (``initialize_from_trained_model_folder`` +
    ``predict_from_files``) writes one segmentation per case to ``output_dir``. ``folds`` defaults to the
    exported folds; ``configuration`` must be given when the zip holds several. ``num_processes`` is nnU-Net's
    number of preprocessing and export workers; 0 runs everything in this process (slow, but no worker processes,
    for containers with little shared memory). Returns ``output_dir``.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    zip_path = Path(zip_path).resolve()
    input_dir = Path(input_dir).resolve()
    output_dir = Path(output_dir).resolve()
    dev = _torch_device(device)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    if num_processes < 0:
        raise InvalidValueError(f"num_processes must be >= 0, got {num_processes}")
    manifest = read_manifest(zip_path)

    configurations = manifest["configurations"]
    if configuration is None:
        if len(configurations) != 1:
            raise InvalidValueError(
                f"{zip_path} holds configurations {configurations}; choose one with -c CONFIGURATION "
                f"(Python: configuration=)")
        configuration = configurations[0]
    elif configuration not in configurations:
        raise InvalidValueError(f"configuration {configuration!r} is not in {zip_path} (it has {configurations})")
    use_folds = [_fold_value(f) for f in (manifest["folds"] if folds is None else folds)]
    unknown = [f for f in use_folds if f not in manifest["folds"]]
    if unknown or not use_folds:
        raise InvalidValueError(
            f"folds {unknown or use_folds} are not in {zip_path} (it has folds {manifest['folds']}); "
            f"choose with -f (Python: folds=)")

    with contextlib.ExitStack() as stack:
        if workspace is not None:
            results = Path(workspace).resolve() / "nnUNet_results"
        elif os.environ.get(RESULTS_VARIABLE):
            results = Path(os.environ[RESULTS_VARIABLE]).resolve()
        else:
            results = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nnunet_results_")))
        stack.enter_context(_nnunet_environment(results))
        try:  # before anything is installed: a model nobody here can run is not left behind
            find_trainer(manifest["trainer"])
        except LookupError as exc:
            hint = ("install nnunet-transfer " + str(manifest["plugin_version"])
                    if manifest["trainer_source"] == "nnunet_transfer" else
                    f"its code (module {manifest['trainer_module']}) was not shipped in the zip: put it in a folder "
                    f"listed in nnUNet_extTrainer")
            raise TrainerNotFoundError(f"cannot predict with {zip_path}: trainer {manifest['trainer']!r} is not "
                                       f"available; {hint} (nothing was installed)") from exc
        installed = install_model(zip_path, results, force=force, trusted=trusted, max_member_bytes=max_member_bytes)
        if installed != manifest:
            raise NnUNetTransferError(f"{zip_path} changed while it was being installed", file=zip_path,
                                      fix="run the command again on a zip nothing else writes to")
        model_dir = Path(get_output_folder(manifest["dataset"], manifest["trainer"], manifest["plans"],
                                           configuration))

        predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                    perform_everything_on_device=dev.type == "cuda", device=dev, verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        # plans checked as data, checkpoints read with weights_only: nothing of the zip is unpickled or imported
        initialize_checked_predictor(predictor, model_dir, use_folds, manifest["checkpoint"], trusted)
        cases = _input_cases(input_dir, predictor.dataset_json)
        output_dir.mkdir(parents=True, exist_ok=True)
        if num_processes == 0:
            predictor.predict_from_files_sequential(cases, str(output_dir), save_probabilities=False,
                                                    overwrite=True)
        else:
            predictor.predict_from_files(cases, str(output_dir), save_probabilities=False, overwrite=True,
                                         num_processes_preprocessing=num_processes,
                                         num_processes_segmentation_export=num_processes)
        steps = apply_model_postprocessing(model_dir, use_folds, output_dir, num_processes)
        if steps:
            print(f"applied the model's postprocessing ({steps} step(s), from {POSTPROCESSING_JSON})")
    return output_dir
