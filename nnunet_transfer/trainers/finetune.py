"""Fine-tuning trainer base: pretrained weights in, fine-tuning controls on, everything else stock nnU-Net.

Every fine-tuning trainer of nnunet-transfer derives from :class:`FineTuneTrainer`. It adds to ``nnUNetTrainer``:

* **Pretrained weights** from either source, with one report (``transfer_report.json``/``.txt`` in the fold folder,
  also printed to the training log):

  - nnU-Net's own ``-pretrained_weights CKPT`` (when every key but ``.seg_layers.`` matches: e.g. MOTS ->
    KiTS with aligned plans). nnU-Net loads the weights; we report what it loaded.
  - the plans' pretrained-weights record (:mod:`nnunet_transfer.transfer.record`) for partial or foreign
    checkpoints (encoder-only, MedicalNet, other input channels), applied by :func:`transfer_weights`;
  - else nnU-Net master's ``pretrain_info`` block of the plans (:mod:`nnunet_transfer.transfer.pretrain_info`),
    through the same path.

* **Fine-tuning controls** (class attributes, so a variant is a three-line subclass as in nnU-Net):

  - ``freeze_encoder``: encoder parameters get no gradient and its normalisation layers keep their statistics;
  - ``head_warmup_epochs``: for the first N epochs only the new (not pretrained) parameters train;
  - ``unfreeze_schedule``: staged unfreezing, ``((epoch, prefixes), ...)``; from ``epoch`` on, parameters whose name
    starts with one of ``prefixes`` train (``"<new>"`` = the new parameters, ``""`` = everything);
  - ``lr_warmup_epochs``: linear learning-rate warm-up, then nnU-Net's poly decay;
  - ``pretrained_lr_factor``: learning rate of the pretrained parameters relative to the new ones.

  The stage is derived from the epoch number at the start of every epoch, so ``--c`` resumes in the right stage.

  Freezing and DDP: parameters that no stage ever trains get ``requires_grad = False`` when the optimiser is built,
  which nnU-Net does right before it wraps the network in DDP, so DDP leaves them out. On one process the parameters
  frozen in the current stage get ``requires_grad = False`` too. Under DDP the other parameters stay registered with
  nnU-Net's own DDP wrapper (it cannot be told about a later change of ``requires_grad``); those frozen in the current
  stage get a zero gradient (a gradient hook, so the all-reduce and nnU-Net's gradient clipping see nothing of them)
  and the optimiser skips them (a step pre-hook drops their gradient), which is exactly the one-process update.

* **Networks with one output** (Swin UNETR, SegResNet, UNet3D, DoDNet's unet3D; their class says
  ``supports_deep_supervision = False``) train without deep supervision: nnU-Net then uses the plain loss and
  full-resolution targets.

* **Resuming** (``--c``): the checkpoint nnU-Net loads holds the weights, so the saved report stands. A run killed
  before its first checkpoint has none: nnU-Net then starts afresh and refuses ``-pretrained_weights`` together with
  ``--c``, so the trainer loads the file named in ``transfer_source.json`` again itself (after checking that its
  sha256 is unchanged and that it loads as plain data), or stops with the command that restarts the run. A run
  never claims weights it did not load, and never trains on from random weights when its transfer record
  (``transfer_report.json``, ``transfer_source.json``) is gone: it stops and says to start again without ``--c``.
"""

from __future__ import annotations

import json
import pydoc
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn
from torch.utils.hooks import RemovableHandle

from nnunet_transfer.errors import InvalidValueError, NnUNetTransferError
from nnunet_transfer.pretrained.formats.base import SourceWeights
from nnunet_transfer.trainers.guarded import GuardedTrainer, check_pretrained_weights_file
from nnunet_transfer.trainers.lr_schedulers import WarmupPolyLRScheduler
from nnunet_transfer.transfer.pretrain_info import read_pretrain_info, transfer_from_pretrain_info
from nnunet_transfer.transfer.record import read_record, transfer_from_record
from nnunet_transfer.transfer.weights import HEAD_PATTERNS, TransferReport, nnunet_pretrained_weights_report
from nnunet_transfer.utils.json_files import read_json_object, require_entries
from nnunet_transfer.utils.modules import unwrap_network

NEW_PARAMETERS = "<new>"
REPORT_STEM = "transfer_report"
#: which file the weights of a run came from, and its sha256 (to load it again after an interrupted start)
SOURCE_FILE = "transfer_source.json"
#: nnU-Net's ``--c`` resumes from the first of these that exists in the fold folder (``maybe_load_checkpoint``)
RESUME_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def network_supports_deep_supervision(class_name: str) -> bool:
    """False for a network class that declares ``supports_deep_supervision = False`` (one output only)."""
    cls = pydoc.locate(class_name)
    return bool(getattr(cls, "supports_deep_supervision", True))


def frozen_parameter_names(names: Sequence[str], pretrained: Set[str], epoch: int, *, freeze_encoder: bool = False,
                           head_warmup_epochs: int = 0,
                           unfreeze_schedule: Sequence[Tuple[int, Sequence[str]]] = (),
                           encoder_prefix: str = "encoder.") -> Set[str]:
    """The parameters frozen in ``epoch`` under the fine-tuning controls (see the module docstring).

    A pure function of the epoch, so a resumed run (``--c``) is in the same stage as an uninterrupted one.
    """
    frozen: Set[str] = set()
    if freeze_encoder:
        frozen |= {n for n in names if n.startswith(encoder_prefix)}
    if epoch < head_warmup_epochs:
        frozen |= {n for n in names if n in pretrained}
    if unfreeze_schedule:
        trainable_prefixes = [p for start, prefixes in unfreeze_schedule if start <= epoch for p in prefixes]

        def trainable(name: str) -> bool:
            return any((p == NEW_PARAMETERS and name not in pretrained) or
                       (p != NEW_PARAMETERS and name.startswith(p)) for p in trainable_prefixes)

        frozen |= {n for n in names if not trainable(n)}
    return frozen


def never_trained_parameter_names(names: Sequence[str], *, freeze_encoder: bool = False,
                                  unfreeze_schedule: Sequence[Tuple[int, Sequence[str]]] = (),
                                  encoder_prefix: str = "encoder.") -> Set[str]:
    """The parameters frozen in every epoch, known from the names alone (before any weights are loaded): the
    encoder with ``freeze_encoder``, and those no stage of ``unfreeze_schedule`` names (unless a stage trains the
    new parameters, which are known only once the weights are loaded)."""
    never: Set[str] = set()
    if freeze_encoder:
        never |= {n for n in names if n.startswith(encoder_prefix)}
    if unfreeze_schedule:
        prefixes = [p for _, stage in unfreeze_schedule for p in stage]
        if NEW_PARAMETERS not in prefixes:
            never |= {n for n in names if not any(n.startswith(p) for p in prefixes)}
    return never


#: the values of ``mode`` in :data:`SOURCE_FILE`
SOURCE_MODES = ("argument", "record", "none")


def read_transfer_source(path: Path) -> dict:
    """:data:`SOURCE_FILE` of a run, checked: one line naming the file when it is damaged or edited by hand."""
    fix = (f"delete {path.parent} and start the training again without --c "
           "(nnUNetv2_train ... -pretrained_weights FILE, or with the plans' record)")
    source = read_json_object(path, fix)
    require_entries(source, {"mode": str}, path, fix)
    if source["mode"] not in SOURCE_MODES:
        raise InvalidValueError(f"{path}: mode {source['mode']!r} is not one of {', '.join(SOURCE_MODES)}",
                                file=path, fix=fix)
    if source["mode"] == "argument":
        require_entries(source, {"path": str, "sha256": str}, path, fix)
    return source


def check_transfer_record(fold_folder: Path) -> None:
    """``--c`` found no checkpoint in ``fold_folder`` (the run was killed before its first one): refuse unless the
    run's transfer record says where its weights came from.

    nnU-Net then starts afresh and loads no ``-pretrained_weights``; without ``transfer_source.json`` (and, for a
    run with pretrained weights, ``transfer_report.json``) we cannot know whether this run was meant to start from
    pretrained weights, and training on would silently train from random weights. The user says "start fresh" by
    running again without ``--c``.
    """
    source_path, report_path = fold_folder / SOURCE_FILE, fold_folder / f"{REPORT_STEM}.json"
    restart = (f"start the training again without --c (nnUNetv2_train ... without --c starts afresh in "
               f"{fold_folder}; give -pretrained_weights FILE again if the run used it)")
    if not source_path.is_file():
        if report_path.is_file():
            return  # the report names the weights; the reload says what is missing
        raise NnUNetTransferError(
            f"--c found no checkpoint in {fold_folder} and no transfer record ({SOURCE_FILE}, {REPORT_STEM}.json): "
            "the run was interrupted before its first checkpoint and whether it started from pretrained weights is "
            "unknown, so it would go on from random weights", file=fold_folder, fix=restart)
    if read_transfer_source(source_path)["mode"] != "none" and not report_path.is_file():
        raise NnUNetTransferError(
            f"--c found no checkpoint in {fold_folder}, and the run's transfer report {report_path.name} is missing "
            f"while {SOURCE_FILE} says its weights were pretrained: they cannot be restored as they were",
            file=report_path, fix=restart)


class FineTuneTrainer(GuardedTrainer):
    """nnUNetTrainer + pretrained-weight transfer with a report + fine-tuning controls."""

    freeze_encoder: bool = False
    head_warmup_epochs: int = 0
    unfreeze_schedule: Sequence[Tuple[int, Sequence[str]]] = ()
    lr_warmup_epochs: int = 0
    pretrained_lr_factor: float = 1.0
    #: prefix of the encoder's parameter names (all our networks and nnU-Net's name it ``encoder``)
    encoder_prefix: str = "encoder."
    #: network keys that are new by design (reported as re-initialised, not as missing)
    new_layer_patterns: Tuple[str, ...] = HEAD_PATTERNS

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if not network_supports_deep_supervision(self.configuration_manager.network_arch_class_name):
            self.enable_deep_supervision = False
        self.transfer_report: Optional[TransferReport] = None
        self._frozen: Optional[Set[str]] = None
        #: the checkpoint nnU-Net's -pretrained_weights path loaded in this run (given now, or again after --c), or None
        self._weights: Optional[SourceWeights] = None
        #: DDP: gradient hooks that zero the parameters frozen in the current stage, and those parameters
        self._zeroing_hooks: Dict[str, RemovableHandle] = {}
        self._stage_frozen_parameters: List[nn.Parameter] = []
        #: the run's own checkpoint nnU-Net's --c resumed from (the weights come from it), or None
        self._resumed_from: Optional[str] = None

    # ------------------------------------------------------------------ pretrained weights
    @property
    def report_path(self) -> Path:
        return Path(self.output_folder) / f"{REPORT_STEM}.json"

    def initialize(self) -> None:
        super().initialize()
        self.transfer_report = self._load_pretrained()
        if self.transfer_report is not None and self.pretrained_lr_factor != 1.0:
            # parameter groups depend on which tensors are pretrained: rebuild now that we know
            self.optimizer, self.lr_scheduler = self.configure_optimizers()
        self._set_trainable_stage(0)

    @property
    def source_path(self) -> Path:
        return Path(self.output_folder) / SOURCE_FILE

    def _load_pretrained(self) -> Optional[TransferReport]:
        network = unwrap_network(self.network)
        resuming_without_checkpoint = self.logger.resume and not any(
            (Path(self.output_folder) / name).is_file() for name in RESUME_CHECKPOINTS)
        if resuming_without_checkpoint:
            check_transfer_record(Path(self.output_folder))
        if self.logger.resume and self.report_path.is_file():
            resumed = [name for name in RESUME_CHECKPOINTS if (Path(self.output_folder) / name).is_file()]
            if resumed:
                self._resumed_from = resumed[0]
                return TransferReport.load(self.report_path)  # resuming: the checkpoint holds the weights
            reloaded = self._reload_after_interrupted_start(network)
            if reloaded is not None:
                return reloaded
            for stale in (self.report_path, self.report_path.with_suffix(".txt")):  # rewritten if weights load now
                stale.unlink(missing_ok=True)
        record = read_record(self.configuration_manager.configuration)
        argument = self._weights = self.pretrained_source
        if argument is not None:
            if record is not None:
                self.print_to_log_file(f"WARNING: -pretrained_weights {argument.source} overrides the plans' record "
                                       f"({record.checkpoint})")
            return nnunet_pretrained_weights_report(network, argument)
        # the public networks name their own task head (``head_prefixes``: out_tr., seg_outputs., ...)
        new_layers = tuple(self.new_layer_patterns) + tuple(getattr(network, "head_prefixes", ()))
        if record is not None:
            return transfer_from_record(network, record, new_layers)
        info = read_pretrain_info(self.plans_manager.plans)  # plans prepared for nnU-Net master
        if info is None or info.checkpoint_path is None:
            return None
        return transfer_from_pretrain_info(network, info, new_layers)

    def _reload_after_interrupted_start(self, network: nn.Module) -> Optional[TransferReport]:
        """``--c`` without a checkpoint (killed in epoch 0): nnU-Net starts afresh and does not load
        ``-pretrained_weights``. Load the file of the interrupted run again, checked; None when that run's weights
        came from the plans' record (applied again as on any start)."""
        restart = (f"delete {self.output_folder} and start the training again without --c "
                   f"(nnUNetv2_train ... -pretrained_weights FILE)")
        stale = f"{self.report_path} belongs to a run interrupted before its first checkpoint"
        if not self.source_path.is_file():
            raise NnUNetTransferError(f"{stale}, and {self.source_path} (which file its weights came from) is "
                                      "missing, so they cannot be loaded again", file=self.report_path, fix=restart)
        source = read_transfer_source(self.source_path)
        if source["mode"] != "argument":
            return None
        path = Path(source["path"])
        weights = check_pretrained_weights_file(path) if path.is_file() else None  # read once: checked, hashed, used
        if weights is None or weights.sha256 != source.get("sha256"):
            raise NnUNetTransferError(f"{stale}; its pretrained weights {path} are gone or changed since (sha256 "
                                      f"was {source.get('sha256')})", file=path, fix=restart)
        self.print_to_log_file(f"--c without a checkpoint: nnU-Net starts afresh; loading the pretrained weights "
                               f"{path} again (sha256 unchanged)")
        self._weights = weights
        return nnunet_pretrained_weights_report(network, weights)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self._weights is not None and self._weights is self.pretrained_source:
            # nnU-Net's -pretrained_weights loader has read the path again since our check (as data only): the
            # tensors checked and reported are the ones that train
            nnunet_pretrained_weights_report(unwrap_network(self.network), self._weights)
        if self.local_rank == 0:
            if self.transfer_report is not None:
                self.transfer_report.save(self.output_folder, REPORT_STEM)
                heading = "Pretrained weights:"
                if self._resumed_from is not None:
                    heading = (f"Resumed with --c: the weights now come from {self._resumed_from} (the run's own "
                               "checkpoint). What the pretrained weights gave at the run's start:")
                self.print_to_log_file(heading + "\n" + str(self.transfer_report), add_timestamp=False)
            self._save_source()
            self._warn_leakage()

    def _warn_leakage(self) -> None:
        """Warn when this fold validates on cases the pretraining data holds (the record written by
        ``leakage-check``, ``align-plans --avoid-leakage`` and the recipes; no image is read here)."""
        from nnunet_transfer.data.leakage import leakage_warning

        warning = leakage_warning(Path(self.preprocessed_dataset_folder_base), self.fold)
        if warning is not None:
            self.print_to_log_file(warning)

    def _save_source(self) -> None:
        """Write :data:`SOURCE_FILE`: where this run's weights came from (read by
        :meth:`_reload_after_interrupted_start`)."""
        if self.transfer_report is None:
            source = {"mode": "none"}  # no pretrained weights: a --c after an interrupted start may start afresh
        elif self._weights is not None:
            path = Path(self._weights.source).resolve()
            source = {"mode": "argument", "path": str(path), "sha256": self._weights.sha256}
        else:
            source = {"mode": "record"}
        self.source_path.write_text(json.dumps(source, indent=2))

    @property
    def pretrained_parameter_names(self) -> Set[str]:
        if self.transfer_report is None:
            return set()
        params = dict(unwrap_network(self.network).named_parameters())
        return {k for k in self.transfer_report.pretrained_keys if k in params}

    # ------------------------------------------------------------------ optimiser
    def make_optimizer(self, param_groups: List[dict]) -> torch.optim.Optimizer:
        """The optimiser over ``param_groups``: nnU-Net's own (SGD, momentum 0.99, Nesterov) unless overridden."""
        reference, _ = nnUNetTrainer.configure_optimizers(self)
        return type(reference)(param_groups, **reference.defaults)

    def configure_optimizers(self):
        named = list(unwrap_network(self.network).named_parameters())
        # nnU-Net builds the optimiser right before it wraps the network in DDP: freeze what never trains now
        never = never_trained_parameter_names(
            [n for n, _ in named], freeze_encoder=self.freeze_encoder, unfreeze_schedule=self.unfreeze_schedule,
            encoder_prefix=self.encoder_prefix)
        for name, param in named:
            if name in never:
                param.requires_grad_(False)
        pretrained = self.pretrained_parameter_names if self.pretrained_lr_factor != 1.0 else set()
        groups = [
            {"params": [p for n, p in named if n in pretrained], "lr_scale": self.pretrained_lr_factor},
            {"params": [p for n, p in named if n not in pretrained], "lr_scale": 1.0},
        ]
        optimizer = self.make_optimizer([g for g in groups if g["params"]])
        optimizer.register_step_pre_hook(self._drop_stage_frozen_gradients)
        scheduler = WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.lr_warmup_epochs)
        return optimizer, scheduler

    def _drop_stage_frozen_gradients(self, optimizer, args, kwargs) -> None:
        """Optimiser step pre-hook: parameters frozen in this stage (DDP) have no gradient, so the step skips them
        (no weight decay, no momentum), as on one process where they do not require one."""
        for param in self._stage_frozen_parameters:
            param.grad = None

    # ------------------------------------------------------------------ freezing
    def frozen_parameter_names(self, epoch: int) -> Set[str]:
        """Names of the parameters that get no update in ``epoch``."""
        return frozen_parameter_names(
            [n for n, _ in unwrap_network(self.network).named_parameters()], self.pretrained_parameter_names, epoch,
            freeze_encoder=self.freeze_encoder, head_warmup_epochs=self.head_warmup_epochs,
            unfreeze_schedule=self.unfreeze_schedule, encoder_prefix=self.encoder_prefix)

    def _set_trainable_stage(self, epoch: int) -> None:
        network = unwrap_network(self.network)
        frozen = self.frozen_parameter_names(epoch)
        if frozen != self._frozen:
            if self._frozen is not None or frozen:
                self.print_to_log_file(f"Epoch {epoch}: {len(frozen)} of {len(list(network.parameters()))} "
                                       "parameter tensors frozen")
            self._frozen = frozen
            if self.is_ddp:
                self._freeze_for_ddp(network, frozen)
            else:
                for name, param in network.named_parameters():
                    param.requires_grad_(name not in frozen)
        self._freeze_norm_statistics(network, frozen)

    def _freeze_for_ddp(self, network: nn.Module, frozen: Set[str]) -> None:
        """Under DDP: the parameters DDP synchronises (those requiring a gradient when it wrapped the network) stay
        so; the frozen ones get a zeroed gradient and no optimiser step (see the module docstring)."""
        stage_frozen = []
        for name, param in network.named_parameters():
            if not param.requires_grad and name not in self._zeroing_hooks:
                continue  # never trained: DDP left it out
            hook = self._zeroing_hooks.pop(name, None)
            if hook is not None:
                hook.remove()
            if name in frozen:
                self._zeroing_hooks[name] = param.register_hook(torch.zeros_like)
                stage_frozen.append(param)
        self._stage_frozen_parameters = stage_frozen

    @staticmethod
    def _freeze_norm_statistics(network: nn.Module, frozen: Set[str]) -> None:
        """Normalisation layers in a frozen part run in eval mode, so their running statistics stay put.

        A layer counts as frozen when all parameters of the module that owns it (its parent) are frozen.
        """
        params = [n for n, _ in network.named_parameters()]
        for module_name, module in network.named_modules():
            if not isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                continue
            owner = module_name.rsplit(".", 1)[0] + "." if "." in module_name else ""
            owned = [n for n in params if n.startswith(owner)]
            if owned and all(n in frozen for n in owned):
                module.eval()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()  # sets train mode and the learning rate
        self._set_trainable_stage(self.current_epoch)
