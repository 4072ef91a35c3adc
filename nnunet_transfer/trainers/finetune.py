"""Fine-tuning trainer base: pretrained weights in, fine-tuning controls on, everything else stock nnU-Net.

Every fine-tuning trainer of nnunet-transfer derives from :class:`FineTuneTrainer`. It adds to ``nnUNetTrainer``:

* **Pretrained weights** from either source, with one report (``transfer_report.json``/``.txt`` in the fold folder,
  also printed to the training log):

  - nnU-Net's own ``-pretrained_weights CKPT`` (when every key but ``.seg_layers.`` matches: e.g. MOTS ->
    KiTS with aligned plans). nnU-Net loads the weights; we report what it loaded.
  - the plans' pretrained-weights record (:mod:`nnunet_transfer.transfer.record`) for partial or foreign
    checkpoints (encoder-only, MedicalNet, other input channels), applied by :func:`transfer_weights`.

* **Fine-tuning controls** (class attributes, so a variant is a three-line subclass as in nnU-Net):

  - ``freeze_encoder``: encoder parameters get no gradient and its normalisation layers keep their statistics;
  - ``head_warmup_epochs``: for the first N epochs only the new (not pretrained) parameters train;
  - ``unfreeze_schedule``: staged unfreezing, ``((epoch, prefixes), ...)``; from ``epoch`` on, parameters whose name
    starts with one of ``prefixes`` train (``"<new>"`` = the new parameters, ``""`` = everything);
  - ``lr_warmup_epochs``: linear learning-rate warm-up, then nnU-Net's poly decay;
  - ``pretrained_lr_factor``: learning rate of the pretrained parameters relative to the new ones.

  The stage is derived from the epoch number at the start of every epoch, so ``--c`` resumes in the right stage.

* **Resuming** (``--c``): the checkpoint nnU-Net loads holds the weights, so the saved report stands. A run killed
  before its first checkpoint has none: nnU-Net then starts afresh and refuses ``-pretrained_weights`` together with
  ``--c``, so the trainer loads the file named in ``transfer_source.json`` again itself (after checking that its
  sha256 is unchanged and that it loads as plain data), or stops with the command that restarts the run. A run
  never claims weights it did not load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.trainers.guarded import GuardedTrainer, check_pretrained_weights_file
from nnunet_transfer.trainers.lr_schedulers import WarmupPolyLRScheduler
from nnunet_transfer.transfer.record import read_record, transfer_from_record
from nnunet_transfer.transfer.weights import HEAD_PATTERNS, TransferReport, nnunet_pretrained_weights_report
from nnunet_transfer.utils.hashing import sha256_of_file
from nnunet_transfer.utils.modules import unwrap_network

NEW_PARAMETERS = "<new>"
REPORT_STEM = "transfer_report"
#: which file the weights of a run came from, and its sha256 (to load it again after an interrupted start)
SOURCE_FILE = "transfer_source.json"
#: nnU-Net's ``--c`` resumes from the first of these that exists in the fold folder (``maybe_load_checkpoint``)
RESUME_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


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
        self.transfer_report: Optional[TransferReport] = None
        self._frozen: Optional[Set[str]] = None
        #: the file nnU-Net's -pretrained_weights path loaded in this run (given now, or again after --c), or None
        self._weights_file: Optional[str] = None

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
        if self.logger.resume and self.report_path.is_file():
            if any((Path(self.output_folder) / name).is_file() for name in RESUME_CHECKPOINTS):
                return TransferReport.load(self.report_path)  # resuming: the checkpoint holds the weights
            reloaded = self._reload_after_interrupted_start(network)
            if reloaded is not None:
                return reloaded
            for stale in (self.report_path, self.report_path.with_suffix(".txt")):  # rewritten if weights load now
                stale.unlink(missing_ok=True)
        record = read_record(self.configuration_manager.configuration)
        argument = self._weights_file = self.pretrained_weights_file
        if argument is not None:
            if record is not None:
                self.print_to_log_file(f"WARNING: -pretrained_weights {argument} overrides the plans' record "
                                       f"({record.checkpoint})")
            return nnunet_pretrained_weights_report(network, argument)
        if record is None:
            return None
        return transfer_from_record(network, record, self.new_layer_patterns)

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
        source = json.loads(self.source_path.read_text())
        if source.get("mode") != "argument":
            return None
        path = Path(source["path"])
        if not path.is_file() or sha256_of_file(path) != source.get("sha256"):
            raise NnUNetTransferError(f"{stale}; its pretrained weights {path} are gone or changed since (sha256 "
                                      f"was {source.get('sha256')})", file=path, fix=restart)
        check_pretrained_weights_file(path)
        self.print_to_log_file(f"--c without a checkpoint: nnU-Net starts afresh; loading the pretrained weights "
                               f"{path} again (sha256 unchanged)")
        self._weights_file = str(path)
        return nnunet_pretrained_weights_report(network, path)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.transfer_report is not None and self.local_rank == 0:
            self.transfer_report.save(self.output_folder, REPORT_STEM)
            self.print_to_log_file("Pretrained weights:\n" + str(self.transfer_report), add_timestamp=False)
            self._save_source()
            self._warn_leakage()

    def _warn_leakage(self) -> None:
        """Warn when this fold validates on cases the pretraining data holds (the record written by
        ``leakage-check``, ``align-plans --avoid-leakage`` and the recipes; no image is read here)."""
        from nnunet_transfer.transfer.leakage import leakage_warning

        warning = leakage_warning(Path(self.preprocessed_dataset_folder_base), self.fold)
        if warning is not None:
            self.print_to_log_file(warning)

    def _save_source(self) -> None:
        """Write :data:`SOURCE_FILE`: where this run's weights came from (read by
        :meth:`_reload_after_interrupted_start`)."""
        if self._weights_file is not None:
            path = Path(self._weights_file).resolve()
            source = {"mode": "argument", "path": str(path), "sha256": sha256_of_file(path)}
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
        pretrained = self.pretrained_parameter_names if self.pretrained_lr_factor != 1.0 else set()
        named = list(unwrap_network(self.network).named_parameters())
        groups = [
            {"params": [p for n, p in named if n in pretrained], "lr_scale": self.pretrained_lr_factor},
            {"params": [p for n, p in named if n not in pretrained], "lr_scale": 1.0},
        ]
        optimizer = self.make_optimizer([g for g in groups if g["params"]])
        scheduler = WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.lr_warmup_epochs)
        return optimizer, scheduler

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
        for name, param in network.named_parameters():
            param.requires_grad_(name not in frozen)
        if frozen != self._frozen:
            if self._frozen is not None or frozen:
                self.print_to_log_file(f"Epoch {epoch}: {len(frozen)} of {len(list(network.parameters()))} "
                                       "parameter tensors frozen")
            if self.is_ddp and isinstance(self.network, DistributedDataParallel):
                # DDP registers gradient hooks for the parameters that require grad at construction
                self.network = DistributedDataParallel(network, device_ids=[self.local_rank])
            self._frozen = frozen
        self._freeze_norm_statistics(network, frozen)

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
