"""Localisation pretraining of the U-Net encoder (Hu et al.) as an ordinary nnU-Net trainer.

``nnUNetv2_train DATASET 3d_fullres 0 -tr LocalizationPretrainTrainer`` trains the plans' encoder with a fully
connected head (:class:`~nnunet_transfer.architectures.localizer.LocalizerNetwork`) to regress the centre of the
target in each training patch. The checkpoint is nnU-Net's usual one; its ``encoder.*`` weights have the keys and
shapes of the segmentation U-Net's encoder and initialise it encoder-only (phase 2 of the paper).

What differs from ``nnUNetTrainer`` is kept to the hooks:

* network: :meth:`LocalizerNetwork.from_plans` (deep supervision off; there is no decoder): the encoder of the
  plans' architecture, named in the training log at the start. The paper's encoder (3x3 conv, batch norm, ReLU, 2x2
  max-pooling, dropout) comes with plans from ``nnunet-transfer plan-arch -a localization-paper``; nnU-Net's own
  plans give nnU-Net's encoder (strided convolutions, instance norm);
* target: the centre of mass of the foreground of each patch, computed from nnU-Net's own target tensor (the
  augmented label map of the patch), so data loading, foreground oversampling and augmentation are nnU-Net's and
  the centre moves with every spatial augmentation. Foreground is ``label > 0`` (the ignore label excluded; for
  region datasets the union of the regions), or one label with :attr:`localization_label` (subclass to choose);
* patches without foreground have no centre and are left out of the loss and of the errors; half the patches of
  a batch are forced to contain foreground (nnU-Net's oversampling, raised from 0.33 to 0.5) so that most count,
  while the other half are random crops that show the target at varied positions, partly cut by the border (the
  centre is then that of the visible part);
* loss: mean squared error on the normalised coordinates
  (:class:`~nnunet_transfer.losses.centre_regression.CentreRegressionLoss`);
* optimiser: RMSprop as in the paper, lr 1e-4 (the paper gives no value), torch's other defaults, nnU-Net's weight
  decay and poly schedule;
* validation: the centre error in mm (Euclidean, with the configuration's voxel spacing) is printed every epoch.
  nnU-Net's logger must get ``mean_fg_dice`` and ``dice_per_class_or_region`` every epoch (progress plot, EMA,
  best-checkpoint choice), so a *localisation score* stands in for the Dice there: ``1 - mean normalised error /
  sqrt(ndim)`` (1 = perfect, 0 = as far as the patch diagonal), which rises as the error falls;
* final validation: no segmentation exists, so nnU-Net's sliding-window validation is replaced by the centre error
  on a seeded, reproducible set of validation patches, written to ``localization_validation.json``. The patches are
  those of one process (the configuration's global batch size and oversampling) whatever the number of DDP ranks:
  every rank draws the same batches, evaluates its share of each and rank 0 writes the gathered result.

``nnUNetv2_predict`` is refused with an explanation (:meth:`LocalizationPretrainTrainer.build_network_architecture`):
the model predicts a point per patch, not a segmentation. The builder recognises nnU-Net's predictor as its caller;
:mod:`nnunet_transfer.trainers.nnunet_invocation` says how and why no nnU-Net hook does this.

The centre targets and the loss are in :mod:`nnunet_transfer.losses.centre_regression`. Centre-only annotations
(points): :func:`~nnunet_transfer.data.point_labels.write_point_labels` (``nnunet-transfer points-to-labels``) turns
a JSON points file into small sphere label maps in an nnU-Net raw dataset, which this trainer then trains on.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import torch
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import distributed as dist
from torch import nn

from nnunet_transfer.architectures.localization_unet import describe_encoder
from nnunet_transfer.architectures.localizer import LocalizerNetwork
from nnunet_transfer.losses.centre_regression import CentreRegressionLoss, centre_errors_mm, full_resolution_target
from nnunet_transfer.trainers.guarded import GuardedTrainer
from nnunet_transfer.trainers.nnunet_invocation import called_from_nnunet_inference
from nnunet_transfer.utils.modules import unwrap_network

#: file the final validation writes into the fold's output folder
VALIDATION_JSON = "localization_validation.json"


def localization_score(normalised_errors: np.ndarray, ndim: int) -> float:
    """Stand-in for nnU-Net's pseudo Dice: ``1 - mean(normalised error) / sqrt(ndim)``, clipped to [0, 1]."""
    return float(np.clip(1.0 - np.mean(normalised_errors) / math.sqrt(ndim), 0.0, 1.0))


def _samples(batch: dict, positions: List[int]) -> dict:
    """The samples at ``positions`` of a batch of nnU-Net's loader (``data``, ``target`` (tensor or list), ``keys``)."""
    def take(value):
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            return [v[positions] for v in value]
        if isinstance(value, (torch.Tensor, np.ndarray)):
            return value[positions]
        return [value[i] for i in positions]

    return {key: take(value) for key, value in batch.items()}


class LocalizationPretrainTrainer(GuardedTrainer):
    """Pretrain the plans' U-Net encoder by regressing the centre of the target in each patch (Hu et al.)."""

    #: foreground label whose centre is regressed; None = every label > 0 (ignore label excluded)
    localization_label: Optional[int] = None
    #: batches in the final validation (None: num_val_iterations_per_epoch) and the seed that fixes its patches
    final_validation_batches: Optional[int] = None
    final_validation_seed: int = 12345
    #: share of the (global) batch forced to contain foreground (nnU-Net's 0.33 raised; see the module docstring)
    foreground_oversampling: float = 0.5

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.initial_lr = 1e-4
        self.oversample_foreground_percent = self.foreground_oversampling
        labels = self.label_manager
        if self.localization_label is not None:
            if labels.has_regions:
                raise ValueError(f"{type(self).__name__}.localization_label cannot be used with the region-based "
                                 "dataset.json: the target is the union of the regions; set it to None")
            if self.localization_label not in labels.foreground_labels:
                raise ValueError(f"{type(self).__name__}.localization_label={self.localization_label} is not a "
                                 f"foreground label of this dataset ({labels.foreground_labels})")
        self.centre_loss = CentreRegressionLoss(self.localization_label, labels.ignore_label, labels.has_regions)

    @property
    def spatial_dims(self) -> int:
        return len(self.configuration_manager.patch_size)

    @property
    def voxel_spacing(self) -> List[float]:
        """The configuration's voxel spacing in mm, in the axis order of the preprocessed arrays."""
        return [float(s) for s in self.configuration_manager.spacing[-self.spatial_dims:]]

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        if called_from_nnunet_inference():
            raise RuntimeError(
                "This model was trained by LocalizationPretrainTrainer: it regresses the centre of the target in a "
                "patch and produces no segmentation, so nnUNetv2_predict cannot use it. Its encoder weights "
                "(checkpoint 'network_weights', keys 'encoder.*') are meant to initialise the encoder of a "
                "segmentation network trained with the same plans (encoder-only transfer).")
        return LocalizerNetwork.from_plans(configuration_manager, num_input_channels, num_output_channels)

    def initialize(self) -> None:
        super().initialize()
        self.print_to_log_file("Localiser: " + describe_encoder(unwrap_network(self.network),
                                                                self.configuration_manager.network_arch_class_name))

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """No-op: the localiser has no decoder and hence no deep supervision outputs."""

    def _build_loss(self) -> nn.Module:
        return self.centre_loss

    def configure_optimizers(self):
        optimizer = torch.optim.RMSprop(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    @contextmanager
    def _autocast(self) -> Iterator[None]:
        # nnU-Net's rule: mixed precision on CUDA only
        with torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            yield

    def validation_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = full_resolution_target(batch["target"]).to(self.device, non_blocking=True)
        with self._autocast():
            prediction = self.network(data).float()
        centres, valid = self.centre_loss.targets(target)
        loss = self.centre_loss(prediction, target)
        invalid = ~valid
        squared = ((prediction - centres) ** 2).mean(1).masked_fill(invalid, float("nan"))
        normalised = (prediction - centres).norm(dim=1).masked_fill(invalid, float("nan"))
        errors_mm = centre_errors_mm(prediction, centres, target.shape[2:], self.voxel_spacing)
        return {"loss": loss.detach().cpu().numpy(),
                "squared_errors": squared.detach().cpu().numpy(),
                "normalised_errors": normalised.detach().cpu().numpy(),
                "errors_mm": errors_mm.masked_fill(invalid, float("nan")).detach().cpu().numpy()}

    def _gathered(self, values: np.ndarray) -> np.ndarray:
        """``values`` of every rank, concatenated in rank order (this rank's alone without DDP)."""
        return np.concatenate([np.asarray(v, dtype=float).ravel() for v in self._gathered_parts(values)])

    def _gathered_objects(self, items: list) -> list:
        """``items`` of every rank, one list in rank order."""
        return [item for part in self._gathered_parts(items) for item in part]

    def _gathered_parts(self, value) -> list:
        if not self.is_ddp:
            return [value]
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, value)
        return parts

    def on_validation_epoch_end(self, val_outputs: List[dict]) -> None:
        outputs = collate_outputs(val_outputs)
        squared = self._gathered(outputs["squared_errors"])
        valid = ~np.isnan(squared)
        normalised = self._gathered(outputs["normalised_errors"])[valid]
        errors_mm = self._gathered(outputs["errors_mm"])[valid]
        if valid.any():
            score, val_loss = localization_score(normalised, self.spatial_dims), float(squared[valid].mean())
            self.print_to_log_file(
                f"Validation centre error ({int(valid.sum())} of {valid.size} patches with foreground): "
                f"mean {errors_mm.mean():.2f} mm, median {np.median(errors_mm):.2f} mm; "
                f"localisation score (logged as pseudo dice) {score:.4f}")
        else:
            score, val_loss = 0.0, float("nan")
            self.print_to_log_file(f"WARNING: none of the {valid.size} validation patches contained foreground; "
                                   "localisation score logged as 0")
        self.logger.log("mean_fg_dice", score, self.current_epoch)
        self.logger.log("dice_per_class_or_region", [score], self.current_epoch)
        self.logger.log("val_losses", val_loss, self.current_epoch)

    def _final_validation_loader(self) -> nnUNetDataLoader:
        """nnU-Net's validation loader (validation cases, no augmentation) on its own, with the global batch size
        and oversampling of one process (under DDP every rank draws the same patches)."""
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        _, dataset_val = self.get_tr_and_val_datasets()
        labels = self.label_manager
        transforms = self.get_validation_transforms(
            None, is_cascaded=self.is_cascaded, foreground_labels=labels.foreground_labels,
            regions=labels.foreground_regions if labels.has_regions else None, ignore_label=labels.ignore_label)
        patch = self.configuration_manager.patch_size
        return nnUNetDataLoader(dataset_val, self.configuration_manager.batch_size, patch, patch, labels,
                                oversample_foreground_percent=self.foreground_oversampling,
                                transforms=transforms, probabilistic_oversampling=self.probabilistic_oversampling)

    def evaluate_validation_patches(self, num_batches: int, seed: int) -> dict:
        """Centre errors on ``num_batches`` seeded batches of validation patches (same patches for the same data,
        split, seed and batch size, with any number of DDP ranks), as the dict written to
        ``localization_validation.json``. Under DDP every rank must call this (it gathers)."""
        loader = self._final_validation_loader()
        rank, world = (dist.get_rank(), dist.get_world_size()) if self.is_ddp else (0, 1)
        rng_state = np.random.get_state()
        np.random.seed(seed)
        mine = []  # (batch, position in the batch, patch) of this rank's share
        try:
            self.network.eval()
            with torch.no_grad():
                for b in range(num_batches):
                    batch = next(loader)
                    positions = list(range(len(batch["keys"])))[rank::world]
                    errors = self.validation_step(_samples(batch, positions))["errors_mm"]
                    mine += [(b, i, {"case": str(batch["keys"][i]), "error_mm": None if np.isnan(e) else float(e)})
                             for i, e in zip(positions, errors)]
        finally:
            np.random.set_state(rng_state)
        per_patch = [patch for _, _, patch in sorted(self._gathered_objects(mine), key=lambda x: x[:2])]
        errors_mm = np.array([p["error_mm"] for p in per_patch if p["error_mm"] is not None])
        return {
            "trainer": type(self).__name__,
            "configuration": self.configuration_name,
            "fold": self.fold,
            "epochs_trained": self.current_epoch,
            "patch_size": list(self.configuration_manager.patch_size),
            "spacing_mm": self.voxel_spacing,
            "seed": seed,
            "num_patches": len(per_patch),
            "num_patches_with_foreground": int(errors_mm.size),
            "mean_error_mm": float(errors_mm.mean()) if errors_mm.size else None,
            "median_error_mm": float(np.median(errors_mm)) if errors_mm.size else None,
            "patches": per_patch,
        }

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """Centre error on validation patches -> ``localization_validation.json`` (there is no segmentation to
        validate, so nnU-Net's sliding-window validation does not apply). Every DDP rank evaluates its share; rank 0
        writes."""
        if save_probabilities:
            self.print_to_log_file("--npz ignored: a localisation model exports no probabilities")
        num_batches = self.final_validation_batches or self.num_val_iterations_per_epoch
        result = self.evaluate_validation_patches(num_batches, self.final_validation_seed)
        if self.local_rank != 0:
            return
        path = Path(self.output_folder) / VALIDATION_JSON
        path.write_text(json.dumps(result, indent=1))
        if result["mean_error_mm"] is not None:
            self.logger.log_summary("final_val/mean_centre_error_mm", result["mean_error_mm"])
            self.print_to_log_file(
                f"Final validation: centre error on {result['num_patches_with_foreground']} validation patches with "
                f"foreground: mean {result['mean_error_mm']:.2f} mm, median {result['median_error_mm']:.2f} mm "
                f"-> {path}")
        else:
            self.print_to_log_file(f"Final validation: no validation patch contained foreground -> {path}")
