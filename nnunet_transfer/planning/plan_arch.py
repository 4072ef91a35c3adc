"""Plans that put our architectures (Med3D encoder U-Net, MLEAM decoder) into an nnU-Net configuration.

nnU-Net builds whatever network a configuration names (``architecture.network_class_name`` + ``arch_kwargs``), so a
different architecture is a different plans file, not a different planner. :func:`plan_arch` starts from the plans
nnU-Net already made for the dataset (``nnUNetv2_plan_and_preprocess`` or ``nnUNetv2_plan_experiment``), keeps
everything that decides the preprocessed data (spacing, normalisation, resampling, and therefore the
``data_identifier``: the data nnU-Net already preprocessed is reused) and batch size, and replaces the architecture
(``arch`` is a name of the encoder registry, :mod:`nnunet_transfer.architectures.encoders`):

* ``med3d-resnet{10,18,34,50,101,152,200}``: :class:`~nnunet_transfer.architectures.med3d_unet.Med3DUNet`
  (MedicalNet encoder + U-Net decoder), entry from :func:`~nnunet_transfer.architectures.med3d_unet.med3d_plans_entry`:
  encoder strides chosen per axis from the spacing like nnU-Net's planner (an axis much coarser than the finest is
  not halved; weight shapes never change), patch size rounded down to a multiple of the total stride so every
  deep-supervision target of nnU-Net has exactly the network's output size;
* ``med3d-resnetN`` with ``decoder="mleam"``: :class:`~nnunet_transfer.architectures.mleam.MLEAMUNet` on the same
  Med3D encoder (decoder with instance norm, one RRB per level as in the paper);
* ``plain`` with ``decoder="mleam"``: MLEAMUNet on the plans' own ``PlainConvUNet`` encoder kwargs;
* a name of the network registry (:mod:`nnunet_transfer.architectures.networks`: ``stunet-{s,b,l,h}``,
  ``genesis-unet3d``, ``suprem-unet``, ``dodnet-unet3d``, ``swinunetr``, ``swinunetr-v2``, ``segresnet``): the public
  model's own network, its constraints applied (:func:`~nnunet_transfer.architectures.networks.network_configuration`
  states them); with ``weights``, a file in the family's released format, read by its reader
  (:mod:`nnunet_transfer.pretrained.formats`), of whose backbone at least 95 % must load.
* ``localization-paper``: :class:`~nnunet_transfer.architectures.localization_unet.LocalizationPaperUNet`, the
  localisation-pretraining paper's U-Net (2D or 3D; patch rounded down to a multiple of 16), for
  ``LocalizationPretrainTrainer`` and ``FrozenEncoderTrainer``.

The patch size is the only data-related value that may change, and nnU-Net's preprocessed data does not depend on
it. With ``weights`` the new configuration also gets a pretrained-weights record (:mod:`nnunet_transfer.transfer.
record`): a MedicalNet file for ``med3d-*`` (checked with the registry's ``verify_checkpoint``, mapped onto
``encoder.*``), an nnU-Net ``checkpoint_final.pth`` of the plain U-Net for ``plain`` (its encoder carries over).
Before anything is written the network is built from the new plans and the weights are loaded into it: every
encoder tensor must be found, otherwise nothing is written and the error says which keys are missing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from nnunet_transfer.architectures.encoders import get_encoder
from nnunet_transfer.architectures.localization_unet import localization_paper_configuration
from nnunet_transfer.architectures.med3d_unet import apply_med3d_plans_entry, med3d_plans_entry
from nnunet_transfer.architectures.networks import NETWORKS, architecture_names, network_configuration
from nnunet_transfer.discovery import nnunet_folder, optional_nnunet_folder
from nnunet_transfer.errors import InvalidValueError, MissingEntryError, NnUNetTransferError
from nnunet_transfer.pretrained.formats.base import SourceWeights
from nnunet_transfer.pretrained.registry import get_checkpoint
from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.transfer.medicalnet import MEDICALNET_EXCLUDE, medicalnet_prefix_map
from nnunet_transfer.transfer.record import RECORD_KEY, PretrainedRecord, write_json_atomic, write_record
from nnunet_transfer.transfer.verify import verify_checkpoint
from nnunet_transfer.transfer.weights import DEFAULT_EXCLUDE, TransferReport, transfer_weights

__all__ = ["plan_arch", "architecture_configuration", "parse_arch", "default_plans_name", "ARCHITECTURES",
           "DECODERS", "MLEAM_CLASS_NAME", "PLAIN_UNET_CLASS_NAME"]

MLEAM_CLASS_NAME = "nnunet_transfer.architectures.mleam.MLEAMUNet"
#: the registry name of the localisation paper's encoder; plan-arch writes its whole U-Net
LOCALIZATION_PAPER = "localization-paper"
PLAIN_UNET_CLASS_NAME = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
#: every value ``arch`` accepts: the encoder registry's names and the network registry's
ARCHITECTURES: Tuple[str, ...] = tuple(architecture_names())
DECODERS: Tuple[Optional[str], ...] = (None, "mleam")
#: MLEAM decoder settings written into the plans (the paper: one RRB per level, edge attention on 3 levels)
MLEAM_DECODER_KWARGS = {"n_conv_per_stage_decoder": 1, "pam_kernel_sizes": [3, 5, 7], "n_edge_levels": 3}


def parse_arch(arch: str, decoder: Optional[str]) -> Optional[int]:
    """Validate ``arch`` (an encoder registry name) and ``decoder``; the Med3D depth (None for ``plain``)."""
    if decoder not in DECODERS:
        raise InvalidValueError(f"unknown decoder {decoder!r}; choose one of {[d for d in DECODERS if d]} or none "
                                "(the architecture's own decoder)")
    if arch in NETWORKS:
        if decoder is not None:
            raise InvalidValueError(f"{arch} is a whole network with its own decoder; --decoder applies to encoders "
                                    "only")
        return None
    spec = get_encoder(arch)
    if spec.name == "plain" and decoder is None:
        raise InvalidValueError("arch 'plain' without a decoder is nnU-Net's own PlainConvUNet: train with the source "
                                "plans directly, or give decoder='mleam'")
    if spec.name == LOCALIZATION_PAPER and decoder is not None:
        raise InvalidValueError(f"arch {LOCALIZATION_PAPER!r} is the paper's whole U-Net; it takes no decoder")
    depth = spec.fixed_kwargs.get("depth")
    return None if depth is None else int(depth)


def default_arch(decoder: Optional[str]) -> str:
    """The encoder when none is named: the MLEAM decoder goes on the plans' own (plain) encoder; a U-Net decoder
    needs an encoder to be named (without one the plans are nnU-Net's own)."""
    if decoder == "mleam":
        return "plain"
    raise NnUNetTransferError("plan-arch needs an encoder (-a/--arch) unless the decoder is mleam",
                              fix=f"give -a with one of: {', '.join(architecture_names())}")


def default_plans_name(source_plans: str, arch: str, decoder: Optional[str]) -> str:
    """``nnUNetPlans_med3d-resnet50``, ``nnUNetPlans_med3d-resnet50_mleam``, ``nnUNetPlans_mleam`` (plain encoder)."""
    parts = [source_plans] + ([] if arch == "plain" else [arch]) + ([decoder] if decoder else [])
    return "_".join(parts)


def architecture_configuration(configuration: dict, arch: str, decoder: Optional[str] = None,
                               configuration_name: str = "3d_fullres") -> dict:
    """A copy of a (resolved) nnU-Net plans configuration whose architecture is ``arch`` + ``decoder``.

    Everything but ``architecture`` and ``patch_size`` is kept (spacing, normalisation, batch size,
    ``data_identifier``). Raises ``ValueError`` for an unknown architecture or one that does not fit the
    configuration (Med3D is 3D only; the MLEAM plain encoder needs PlainConvUNet plans).
    """
    depth = parse_arch(arch, decoder)
    if arch in NETWORKS:
        return network_configuration(configuration, arch, configuration_name)[0]
    if arch == LOCALIZATION_PAPER:
        return localization_paper_configuration(configuration, configuration_name)
    patch = [int(p) for p in configuration["patch_size"]]
    if depth is None:  # plain encoder + MLEAM decoder
        architecture = configuration.get("architecture", {})
        if architecture.get("network_class_name") != PLAIN_UNET_CLASS_NAME:
            raise InvalidValueError(
                f"configuration {configuration_name!r} uses {architecture.get('network_class_name')!r}; the MLEAM "
                f"decoder on the plain encoder needs plans of nnU-Net's {PLAIN_UNET_CLASS_NAME} (nnUNetPlans, "
                "made by nnUNetv2_plan_and_preprocess with the default planner)")
        kwargs = {k: copy.deepcopy(v) for k, v in architecture["arch_kwargs"].items()
                  if k != "n_conv_per_stage_decoder"}
        new = copy.deepcopy(configuration)
        new["architecture"] = {
            "network_class_name": MLEAM_CLASS_NAME,
            "arch_kwargs": {"encoder": "plain", **kwargs, **copy.deepcopy(MLEAM_DECODER_KWARGS)},
            "_kw_requires_import": list(architecture["_kw_requires_import"]),
        }
        return new

    if len(patch) != 3:
        raise InvalidValueError(
            f"configuration {configuration_name!r} is {len(patch)}D (patch size {patch}); the Med3D "
            "encoder is a 3D network: use a 3D configuration such as 3d_fullres")
    entry = med3d_plans_entry(depth, patch, spacing=configuration["spacing"], adapt_strides_to_spacing=True)
    if decoder is None:
        return apply_med3d_plans_entry(configuration, entry)
    kwargs = entry["arch_kwargs"]
    new = copy.deepcopy(configuration)
    new["architecture"] = {
        "network_class_name": MLEAM_CLASS_NAME,
        "arch_kwargs": {
            "encoder": "med3d",
            "depth": kwargs["depth"],
            "shortcut_type": kwargs["shortcut_type"],
            # Med3DResNet's three downsampling strides (conv1, maxpool, layer2); the entry's first is the input
            "strides": [list(s) for s in kwargs["strides"][1:]],
            **copy.deepcopy(MLEAM_DECODER_KWARGS),
            # MedicalNet's batch norm stays in the encoder (its statistics are pretrained); the new decoder gets
            # nnU-Net's instance norm, which works with nnU-Net's batch size of 2
            "decoder_norm_op": kwargs["decoder_norm_op"],
            "decoder_norm_op_kwargs": copy.deepcopy(kwargs["decoder_norm_op_kwargs"]),
        },
        "_kw_requires_import": ["decoder_norm_op"],
    }
    new["patch_size"] = list(entry["patch_size"])
    return new


def _dataset_json(dataset_folder: Path, raw_folder: Optional[Path]) -> dict:
    for candidate in (dataset_folder / "dataset.json", raw_folder / "dataset.json" if raw_folder else None):
        if candidate is not None and candidate.is_file():
            return json.loads(candidate.read_text())
    raise FileNotFoundError(f"no dataset.json in {dataset_folder} or in the raw dataset folder; convert the dataset "
                            "into nnUNet_raw and plan it first")


def _build_network(plans: dict, configuration: str, dataset_json: dict):
    """The network nnU-Net's trainer builds from these plans (no deep supervision)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    cfg = manager.get_configuration(configuration)
    return get_network_from_plans(cfg.network_arch_class_name, cfg.network_arch_init_kwargs,
                                  cfg.network_arch_init_kwargs_req_import,
                                  determine_num_input_channels(manager, cfg, dataset_json),
                                  manager.get_label_manager(dataset_json).num_segmentation_heads,
                                  allow_init=False, deep_supervision=False)


def _verify_medicalnet(weights: Path, depth: int, source: SourceWeights) -> None:
    """Registry check of a MedicalNet file; a renamed file is checked against the record of its depth."""
    try:
        record = get_checkpoint(weights.name)
    except KeyError:
        # not a released file name: check architecture, keys and shapes, but no checksum (none is known for it)
        record = dataclasses.replace(get_checkpoint(f"resnet_{depth}.pth"), sha256=None)
    if record.depth != depth:
        raise InvalidValueError(
            f"{weights} is MedicalNet's {record.file_name}, a ResNet-{record.depth}, but the architecture "
            f"is med3d-resnet{depth} (ResNet-{depth}); use arch med3d-resnet{record.depth} or the "
            f"ResNet-{depth} file")
    verification = verify_checkpoint(weights, record=record, compute_sha256=False, weights=source)
    if not verification.ok:
        raise InvalidValueError(
            f"{weights} is not usable as MedicalNet weights for med3d-resnet{depth}:\n{verification}\n"
            f"Give the MedicalNet file of ResNet-{depth} (resnet_{depth}.pth or "
            f"resnet_{depth}_23dataset.pth), or pick the arch that matches the file.")


def _check_encoder_loads(network, weights: SourceWeights, prefix_map: Dict[str, str], exclude: Tuple[str, ...]
                         ) -> TransferReport:
    import torch

    with torch.no_grad():
        report = transfer_weights(network, weights, prefix_map=prefix_map, exclude=exclude)
    encoder = f"{network.key_to_encoder}."
    mismatched = {k for k, _, _ in report.shape_mismatched}
    missing = [k for k in report.missing if k.startswith(encoder)] + \
              sorted(k for k in mismatched if k.startswith(encoder))
    if missing or not any(k.startswith(encoder) for k in report.loaded):
        shown = ", ".join(missing[:6]) + (f", ... (+{len(missing) - 6})" if len(missing) > 6 else "")
        raise InvalidValueError(
            f"{weights} does not cover the network's encoder: {len(missing)} encoder tensors are missing "
            f"or have another shape ({shown or 'nothing loaded'}).\n{report}\nIs it the checkpoint of "
            "this architecture (depth, shortcut type, plain U-Net of the same plans)?")
    return report


def _training_guard(report: TransferReport) -> float:
    """The record's ``min_fraction``: a different file put in the checkpoint's place would load much less."""
    return math.floor(90 * report.fraction_loaded) / 100


def public_weights_record(network, weights: Path, arch: str, source: SourceWeights) -> PretrainedRecord:
    """The pretrained-weights record for a released public model's file in the network ``arch`` (registry name).

    ``source`` is the file read once (safely, its format recognised by the registry); at least
    :data:`MIN_BACKBONE_FRACTION` of its backbone tensors must load into ``network`` (else ``ValueError`` listing
    what did not). The record keeps the family's non-backbone tensors out and guards against another file being put
    in its place.
    """
    from nnunet_transfer.transfer.backbone import MIN_BACKBONE_FRACTION, load_backbone

    if source.format == "state_dict":
        raise InvalidValueError(f"{weights} is in none of the released formats nnunet-transfer reads (STU-Net, Models "
                                "Genesis, SuPreM, Universal Model, VoCo, DoDNet, nnU-Net); is it the released file?")
    reading = source.reading
    transfer = load_backbone(network, reading.tensors, family=source.family, source=str(weights),
                             filtered=reading.filtered)
    expected = reading.metadata.get("architecture")
    hint = (f" The file is a {expected} checkpoint: plan with --arch {expected}." if expected and expected != arch
            else "")
    if transfer.fraction < MIN_BACKBONE_FRACTION:
        raise InvalidValueError(
            f"only {100 * transfer.fraction:.1f}% of the {source.family} backbone in {weights} loads into "
            f"{arch} (at least {100 * MIN_BACKBONE_FRACTION:.0f}% needed).{hint}\n{transfer}")
    print(f"[plan-arch] {weights.name}: {transfer.summary()}" + (f"\n[plan-arch]   {hint.strip()}" if hint else ""))
    for note in reading.notes:
        print(f"[plan-arch]   {note}")
    exclude = tuple(DEFAULT_EXCLUDE) + tuple(getattr(network, "head_prefixes", ()))
    return PretrainedRecord(checkpoint=str(weights), prefix_map={}, exclude=list(exclude),
                            min_fraction=_training_guard(transfer.report),
                            description=f"{source.family} backbone ({weights.name}) in {arch}")


def plan_arch(dataset_id: int, arch: Optional[str] = None, decoder: Optional[str] = None,
              weights: Optional[str] = None, source_plans: str = "nnUNetPlans", configuration: str = "3d_fullres",
              plans_name: Optional[str] = None, preprocess: bool = True, num_processes: int = 2,
              keep_record: bool = False) -> Path:
    """Write ``<nnUNet_preprocessed>/<dataset>/<plans_name>.json`` whose ``configuration`` builds ``arch``/``decoder``.

    Args:
        dataset_id: nnU-Net dataset id; its ``source_plans`` must exist (``nnUNetv2_plan_and_preprocess -d ID``).
        arch: ``med3d-resnet{10,18,34,50,101,152,200}`` or ``plain`` (the plans' PlainConvUNet encoder; needs
            ``decoder="mleam"``); None: :func:`default_arch` (``plain`` for the MLEAM decoder).
        decoder: None (the architecture's own decoder) or ``"mleam"``.
        weights: MedicalNet checkpoint for ``med3d-*``; an nnU-Net checkpoint of the plain U-Net for ``plain``.
            Written as the configuration's pretrained-weights record after checking that every encoder tensor
            loads; train without ``-pretrained_weights``, the trainer applies the record.
        source_plans, configuration: plans identifier and configuration to start from.
        plans_name: new plans identifier (default :func:`default_plans_name`); never the source's.
        preprocess: preprocess with nnU-Net when the data of the (kept) ``data_identifier`` is not there yet.
        num_processes: processes for that preprocessing.
        keep_record: carry the source configuration's pretrained-weights record into the new plans (it was made
            for the source architecture: by default it is dropped, and both are said). ``weights`` replaces it.

    The new plans hold only ``configuration`` (inheritance resolved). Returns the plans file.
    """
    from nnunet_transfer.dataset_lookup import dataset_name as resolve_dataset_name
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    arch = arch or default_arch(decoder)
    depth = parse_arch(arch, decoder)
    plans_name = plans_name or default_plans_name(source_plans, arch, decoder)
    if plans_name == source_plans:
        raise InvalidValueError(
            f"plans_name {plans_name!r} equals the source plans; give a new name so nnU-Net's plans "
            "stay as they are")
    root = nnunet_folder("nnUNet_preprocessed")
    dataset_name = resolve_dataset_name(dataset_id)
    folder = root / dataset_name
    source_file = folder / f"{source_plans}.json"
    if not source_file.is_file():
        raise FileNotFoundError(f"{source_file} does not exist. Plan the dataset with nnU-Net first: "
                                f"nnUNetv2_plan_and_preprocess -d {dataset_id} -c {configuration} (or "
                                f"nnUNetv2_extract_fingerprint + nnUNetv2_plan_experiment -d {dataset_id})")
    plans = json.loads(source_file.read_text())
    available = sorted(plans.get("configurations", {}))
    if configuration not in available:
        raise MissingEntryError(f"{source_file} has no configuration {configuration!r} (has: {available})",
                                file=source_file)
    resolved = PlansManager(copy.deepcopy(plans)).get_configuration(configuration).configuration
    for key in ("inherits_from", "next_stage", "previous_stage"):  # the new plans hold this one configuration
        resolved.pop(key, None)
    old_record = resolved.pop(RECORD_KEY, None)
    if old_record is not None and weights is None:
        checkpoint = old_record.get("checkpoint") if isinstance(old_record, dict) else old_record
        if keep_record:
            resolved[RECORD_KEY] = old_record
            print(f"[plan-arch] carried {source_plans}'s pretrained-weights record ({checkpoint}) into the new "
                  "plans; it was made for the source architecture: check it with transfer-check")
        else:
            print(f"[plan-arch] {source_plans}'s pretrained-weights record ({checkpoint}) is not carried over: it was "
                  "made for the source architecture (give --weights, or --keep-record to carry it)")
    notes: List[str] = []
    if arch in NETWORKS:
        new_cfg, notes = network_configuration(resolved, arch, configuration)
    else:
        new_cfg = architecture_configuration(resolved, arch, decoder, configuration)
    new_plans = dict(copy.deepcopy(plans), plans_name=plans_name, configurations={configuration: new_cfg})

    raw = optional_nnunet_folder("nnUNet_raw")
    record = None
    if weights is not None:
        weights_path = Path(weights).resolve()
        if not weights_path.is_file():
            raise FileNotFoundError(f"pretrained weights {weights_path} do not exist")
        source = read_source_weights(weights_path)  # read once: verified, loaded and recorded from these bytes
        if depth is not None:
            _verify_medicalnet(weights_path, depth, source)
        network = _build_network(new_plans, configuration, _dataset_json(folder, raw / dataset_name
                                                                         if raw else None))
        if arch in NETWORKS:
            record = public_weights_record(network, weights_path, arch, source)
        elif depth is not None:
            prefix_map, exclude = medicalnet_prefix_map(network), MEDICALNET_EXCLUDE
            description = f"MedicalNet ResNet-{depth} encoder ({weights_path.name})"
        else:
            # an nnU-Net PlainConvUNet checkpoint: same encoder keys; its decoder (and the decoder's reference to
            # the encoder, decoder.encoder.*) does not fit the MLEAM decoder
            prefix_map, exclude = {}, tuple(DEFAULT_EXCLUDE) + ("decoder.",)
            description = f"encoder of the plain nnU-Net U-Net {weights_path}"
        if record is None:
            report = _check_encoder_loads(network, source, prefix_map, exclude)
            record = PretrainedRecord(checkpoint=str(weights_path), prefix_map=prefix_map, exclude=list(exclude),
                                      min_fraction=_training_guard(report), description=description)
            print(f"[plan-arch] {weights_path.name}: {report.n_loaded} tensors load into the encoder "
                  f"({100 * report.fraction_loaded:.1f}% of the parameters), 0 encoder tensors missing")

    plans_file = folder / f"{plans_name}.json"
    write_json_atomic(plans_file, new_plans)
    if record is not None:
        write_record(plans_file, configuration, record, source)
    print(f"[plan-arch] {dataset_name}/{plans_name} [{configuration}]: {new_cfg['architecture']['network_class_name']}"
          f", patch size {new_cfg['patch_size']}, data {new_cfg['data_identifier']}")
    for note in notes:
        print(f"[plan-arch]   {note}")

    data_folder = folder / new_cfg["data_identifier"]
    if not (data_folder.is_dir() and any(data_folder.iterdir())):
        if preprocess:
            from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

            preprocess_dataset(dataset_id, plans_name, (configuration,), [num_processes], verbose=False,
                               show_progress_bar=False)
        else:
            warnings.warn(f"{data_folder} holds no preprocessed data yet; run nnUNetv2_preprocess -d {dataset_id} "
                          f"-plans_name {plans_name} -c {configuration} before training", stacklevel=2)
    return plans_file
