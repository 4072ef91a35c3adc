"""Localisation pretraining of the U-Net encoder (Hu et al.) as an ordinary nnU-Net trainer.

``nnUNetv2_train DATASET 3d_fullres 0 -tr LocalizationPretrainTrainer`` trains the plans' encoder with a fully
connected head (:class:`~nnunet_transfer.architectures.localizer.LocalizerNetwork`) to regress the centre of the
target in each training patch. The checkpoint is nnU-Net's usual one; its ``encoder.*`` weights have the keys and
shapes of the segmentation U-Net's encoder and initialise it encoder-only (phase 2 of the paper).

What differs from ``nnUNetTrainer`` is kept to the hooks:

* network: :meth:`LocalizerNetwork.from_plans` (deep supervision off; there is no decoder);
* target: the centre of mass of the foreground of each patch, computed from nnU-Net's own target tensor (the
  augmented label map of the patch), so data loading, foreground oversampling and augmentation are nnU-Net's and
  the centre moves with every spatial augmentation. Foreground is ``label > 0`` (the ignore label excluded; for
  region datasets the union of the regions), or one label with :attr:`localization_label` (subclass to choose);
* patches without foreground have no centre and are left out of the loss and of the errors; half the patches of
  a batch are forced to contain foreground (nnU-Net's oversampling, raised from 0.33 to 0.5) so that most count,
  while the other half are random crops that show the target at varied positions, partly cut by the border (the
  centre is then that of the visible part);
* loss: mean squared error on the normalised coordinates (:class:`CentreRegressionLoss`);
* optimiser: RMSprop as in the paper, lr 1e-4 (the paper gives no value), torch's other defaults, nnU-Net's weight
  decay and poly schedule;
* validation: the centre error in mm (Euclidean, with the configuration's voxel spacing) is printed every epoch.
  nnU-Net's logger must get ``mean_fg_dice`` and ``dice_per_class_or_region`` every epoch (progress plot, EMA,
  best-checkpoint choice), so a *localisation score* stands in for the Dice there: ``1 - mean normalised error /
  sqrt(ndim)`` (1 = perfect, 0 = as far as the patch diagonal), which rises as the error falls;
* final validation: no segmentation exists, so nnU-Net's sliding-window validation is replaced by the centre error
  on a seeded, reproducible set of validation patches, written to ``localization_validation.json``.

``nnUNetv2_predict`` is refused with an explanation (:meth:`LocalizationPretrainTrainer.build_network_architecture`):
the model predicts a point per patch, not a segmentation.

Centre-only annotations (points): :func:`write_point_labels` turns a JSON points file into small sphere label maps
in an nnU-Net raw dataset, so the unchanged pipeline (resampling, cropping, oversampling, augmentation) carries the
points; the centre of mass of a sphere is its centre, so the target is the annotated point up to resampling and,
when a patch border cuts the sphere, at most the sphere radius.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

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

from nnunet_transfer.architectures.localizer import LocalizerNetwork
from nnunet_transfer.trainers.guarded import GuardedTrainer

PathLike = Union[str, Path]

#: file the final validation writes into the fold's output folder
VALIDATION_JSON = "localization_validation.json"


# ------------------------------------------------------------------------------------------------------------------
# centre targets and errors
# ------------------------------------------------------------------------------------------------------------------

def foreground_mask(target: torch.Tensor, label: Optional[int] = None, ignore_label: Optional[int] = None,
                    regions: bool = False) -> torch.Tensor:
    """Boolean foreground (B, *spatial) of nnU-Net's batch target.

    ``target`` is the label map (B, 1, *spatial), or with ``regions`` the region masks (B, R, *spatial) followed,
    when the dataset has an ignore label, by nnU-Net's ignore channel. Foreground is ``label > 0`` without the
    ignore label, ``== label`` when one is chosen, or the union of the regions.
    """
    if target.ndim < 4:
        raise ValueError(f"target must be (B, C, *spatial) with 2 or 3 spatial axes, got shape {tuple(target.shape)}")
    if regions:
        if label is not None:
            raise ValueError("a single localisation label cannot be chosen on a region-based dataset: the target "
                             "is the union of the regions")
        channels = target[:, :-1] if ignore_label is not None else target
        return (channels > 0).any(1)
    if target.shape[1] != 1:
        raise ValueError(f"expected a label map with one channel (B, 1, *spatial), got shape {tuple(target.shape)}; "
                         "is deep supervision or region training on?")
    labels = target[:, 0]
    if label is not None:
        return labels == label
    mask = labels > 0
    if ignore_label is not None:
        mask &= labels != ignore_label
    return mask


def centres_of_mass(mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalised centre of mass (B, ndim) of boolean masks (B, *spatial), and which masks are non-empty (B,).

    Coordinate ``(index + 0.5) / size`` per axis, in the array's axis order, so 0 and 1 are the patch's outer
    faces. Empty masks get the patch centre (0.5) and ``valid == False``.
    """
    weights = mask.float()
    spatial = weights.shape[1:]
    total = weights.flatten(1).sum(1)
    centres = []
    for axis, size in enumerate(spatial):
        other = [d + 1 for d in range(len(spatial)) if d != axis]
        marginal = weights.sum(dim=other) if other else weights
        coords = (torch.arange(size, device=mask.device, dtype=torch.float32) + 0.5) / size
        centres.append((marginal * coords).sum(1) / total.clamp_min(1))
    centres = torch.stack(centres, 1)
    valid = total > 0
    return torch.where(valid[:, None], centres, torch.full_like(centres, 0.5)), valid


def centre_errors_mm(predicted: torch.Tensor, true: torch.Tensor, patch_shape: Sequence[int],
                     spacing: Sequence[float]) -> torch.Tensor:
    """Euclidean distance in mm (B,) between normalised centres (B, ndim) in a patch of ``patch_shape`` voxels of
    ``spacing`` mm (both in the array's axis order)."""
    if not (predicted.shape[-1] == true.shape[-1] == len(patch_shape) == len(spacing)):
        raise ValueError(f"centres {tuple(predicted.shape)} / {tuple(true.shape)}, patch {tuple(patch_shape)} and "
                         f"spacing {tuple(spacing)} must have the same number of axes")
    mm_per_unit = torch.as_tensor([n * s for n, s in zip(patch_shape, spacing)], dtype=torch.float32,
                                  device=predicted.device)
    return ((predicted.float() - true.float()) * mm_per_unit).norm(dim=-1)


class CentreRegressionLoss(nn.Module):
    """MSE between predicted and true normalised centres; the true centre comes from the batch's label target.

    Patches without foreground have no centre and are left out; a batch without any gives a zero loss that still
    back-propagates (nnU-Net's train step calls ``backward`` unconditionally).
    """

    def __init__(self, label: Optional[int] = None, ignore_label: Optional[int] = None, regions: bool = False):
        super().__init__()
        self.label = label
        self.ignore_label = ignore_label
        self.regions = regions

    def targets(self, target: Union[torch.Tensor, List[torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """True centres (B, ndim) and validity (B,) of nnU-Net's target (full-resolution entry of a list)."""
        if isinstance(target, (list, tuple)):
            target = target[0]
        return centres_of_mass(foreground_mask(target, self.label, self.ignore_label, self.regions))

    def forward(self, prediction: torch.Tensor, target: Union[torch.Tensor, List[torch.Tensor]]) -> torch.Tensor:
        centres, valid = self.targets(target)
        if prediction.shape != centres.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} does not match the centres "
                             f"{tuple(centres.shape)} of a target of shape {tuple(_full_res(target).shape)}")
        squared = (prediction.float() - centres) ** 2
        if not bool(valid.any()):
            return squared.sum() * 0.0
        return squared[valid].mean()


def _full_res(target: Union[torch.Tensor, List[torch.Tensor]]) -> torch.Tensor:
    return target[0] if isinstance(target, (list, tuple)) else target


def localization_score(normalised_errors: np.ndarray, ndim: int) -> float:
    """Stand-in for nnU-Net's pseudo Dice: ``1 - mean(normalised error) / sqrt(ndim)``, clipped to [0, 1]."""
    return float(np.clip(1.0 - np.mean(normalised_errors) / math.sqrt(ndim), 0.0, 1.0))


# ------------------------------------------------------------------------------------------------------------------
# centre-only annotations: points file -> sphere label maps of an nnU-Net raw dataset
# ------------------------------------------------------------------------------------------------------------------

POINT_COORDINATES = ("world", "voxel")


def read_points_file(path: PathLike) -> Dict[str, List[float]]:
    """``{case_id: [c0, c1(, c2)]}`` from a JSON points file, checked (one point of 2 or 3 numbers per case)."""
    path = Path(path)
    try:
        points = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the points file {path}: {e}") from e
    if not isinstance(points, dict) or not points:
        raise ValueError(f"{path} must hold a non-empty JSON object {{case_id: [coordinates]}}")
    for case, point in points.items():
        if not (isinstance(point, list) and len(point) in (2, 3)
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in point)):
            raise ValueError(f"{path}: the point of case {case!r} must be a list of 2 or 3 finite numbers, "
                             f"got {point!r}")
    return {case: [float(v) for v in point] for case, point in points.items()}


def sphere_label_array(size_xyz: Sequence[int], spacing_xyz: Sequence[float], centre_index_xyz: Sequence[float],
                       radius_mm: float) -> np.ndarray:
    """uint8 array in numpy order (reversed ``size_xyz``): 1 within ``radius_mm`` of the continuous voxel index
    ``centre_index_xyz`` (an ellipsoid in voxels for anisotropic spacing), at least the nearest voxel."""
    size = np.asarray(size_xyz, dtype=int)
    spacing = np.asarray(spacing_xyz, dtype=float)
    centre = np.asarray(centre_index_xyz, dtype=float)
    lo = np.maximum(np.floor(centre - radius_mm / spacing).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius_mm / spacing).astype(int) + 1, size)
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")  # x, y, z order
    distance_sq = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    label_xyz = np.zeros(tuple(size), dtype=np.uint8)
    label_xyz[tuple(slice(a, b) for a, b in zip(lo, hi))] = distance_sq <= radius_mm ** 2
    nearest = tuple(int(v) for v in np.clip(np.rint(centre), 0, size - 1))
    label_xyz[nearest] = 1
    return np.ascontiguousarray(label_xyz.transpose(tuple(range(len(size)))[::-1]))


def write_point_labels(points_file: PathLike, dataset_dir: PathLike, radius_mm: float = 3.0,
                       coordinates: str = "world", overwrite: bool = False) -> List[Path]:
    """Write ``labelsTr/<case><file_ending>`` of an nnU-Net raw dataset from centre points: label 1 in a sphere.

    ``points_file`` is JSON ``{case_id: point}``, one point per training case of ``dataset_dir/imagesTr``:
    ``coordinates="world"``: physical (x, y, z) in mm, the ITK/SimpleITK (LPS) convention of the image header
    (3D Slicer shows RAS: negate x and y); ``"voxel"``: array index (z, y, x) of the raw image as SimpleITK's
    ``GetArrayFromImage`` orders it (fractions allowed). 2D images take two numbers. ``radius_mm`` should be at
    least the target spacing of the configuration you train, so that the sphere survives resampling; it also bounds
    the centre bias where a patch border cuts the sphere. dataset.json must define label 1. Returns the files
    written; existing label files are only replaced with ``overwrite``.
    """
    import SimpleITK as sitk

    if coordinates not in POINT_COORDINATES:
        raise ValueError(f"coordinates must be one of {POINT_COORDINATES}, got {coordinates!r}")
    if not radius_mm > 0:
        raise ValueError(f"radius_mm must be positive, got {radius_mm}")
    dataset_dir = Path(dataset_dir)
    dataset_json_path = dataset_dir / "dataset.json"
    if not dataset_json_path.is_file():
        raise FileNotFoundError(f"{dataset_json_path} not found: dataset_dir must be an nnU-Net raw dataset folder "
                                "(dataset.json, imagesTr/)")
    dataset_json = json.loads(dataset_json_path.read_text())
    file_ending = dataset_json.get("file_ending")
    if not file_ending:
        raise ValueError(f"{dataset_json_path} has no 'file_ending'")
    if 1 not in dataset_json.get("labels", {}).values():
        raise ValueError(f"{dataset_json_path} must define the point label 1, e.g. "
                         '"labels": {"background": 0, "target": 1}')
    points = read_points_file(points_file)
    images = {p.name[:-len("_0000" + file_ending)]: p
              for p in sorted((dataset_dir / "imagesTr").glob("*_0000" + file_ending))}
    if not images:
        raise FileNotFoundError(f"no training images *_0000{file_ending} in {dataset_dir / 'imagesTr'}")
    unknown, unpointed = sorted(set(points) - set(images)), sorted(set(images) - set(points))
    if unknown or unpointed:
        raise ValueError(f"{points_file} and {dataset_dir / 'imagesTr'} must list the same cases: "
                         f"points without an image: {unknown[:10]}, images without a point: {unpointed[:10]}")
    labels_dir = dataset_dir / "labelsTr"
    existing = [c for c in images if (labels_dir / f"{c}{file_ending}").exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} label files already exist in {labels_dir} (e.g. {existing[0]}"
                              f"{file_ending}); pass overwrite=True to replace them")

    labels_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for case, image_path in images.items():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(image_path))
        reader.ReadImageInformation()
        size, spacing = reader.GetSize(), reader.GetSpacing()
        ndim = len(size)
        point = points[case]
        if len(point) != ndim:
            raise ValueError(f"case {case!r}: {len(point)} coordinates for a {ndim}D image ({image_path})")
        if coordinates == "world":
            direction = np.asarray(reader.GetDirection(), dtype=float).reshape(ndim, ndim)
            offset = np.asarray(point) - np.asarray(reader.GetOrigin())
            index = np.linalg.solve(direction, offset) / np.asarray(spacing)
        else:
            index = np.asarray(point[::-1])
        if np.any(index < -0.5) or np.any(index > np.asarray(size) - 0.5):
            raise ValueError(f"case {case!r}: the point {point} ({coordinates}) lies outside the image {image_path} "
                             f"(voxel index x,y,z {np.round(index, 2).tolist()}, size {list(size)})")
        label = sitk.GetImageFromArray(sphere_label_array(size, spacing, index, radius_mm))
        label.SetSpacing(spacing)
        label.SetOrigin(reader.GetOrigin())
        label.SetDirection(reader.GetDirection())
        out = labels_dir / f"{case}{file_ending}"
        sitk.WriteImage(label, str(out), True)
        written.append(out)
    return written


# ------------------------------------------------------------------------------------------------------------------
# trainer
# ------------------------------------------------------------------------------------------------------------------

def _called_from_nnunet_inference() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith("nnunetv2.inference"):
            return True
        frame = frame.f_back
    return False


class LocalizationPretrainTrainer(GuardedTrainer):
    """Pretrain the plans' U-Net encoder by regressing the centre of the target in each patch (Hu et al.)."""

    #: foreground label whose centre is regressed; None = every label > 0 (ignore label excluded)
    localization_label: Optional[int] = None
    #: batches in the final validation (None: num_val_iterations_per_epoch) and the seed that fixes its patches
    final_validation_batches: Optional[int] = None
    final_validation_seed: int = 12345

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.initial_lr = 1e-4
        self.oversample_foreground_percent = 0.5
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
        if _called_from_nnunet_inference():
            raise RuntimeError(
                "This model was trained by LocalizationPretrainTrainer: it regresses the centre of the target in a "
                "patch and produces no segmentation, so nnUNetv2_predict cannot use it. Its encoder weights "
                "(checkpoint 'network_weights', keys 'encoder.*') are meant to initialise the encoder of a "
                "segmentation network trained with the same plans (encoder-only transfer).")
        return LocalizerNetwork.from_plans(configuration_manager, num_input_channels, num_output_channels)

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
        target = _full_res(batch["target"]).to(self.device, non_blocking=True)
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
        values = np.asarray(values, dtype=float).ravel()
        if not self.is_ddp:
            return values
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, values)
        return np.concatenate(parts)

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
        """nnU-Net's validation loader (validation cases, no augmentation, same oversampling) on its own."""
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        _, dataset_val = self.get_tr_and_val_datasets()
        labels = self.label_manager
        transforms = self.get_validation_transforms(
            None, is_cascaded=self.is_cascaded, foreground_labels=labels.foreground_labels,
            regions=labels.foreground_regions if labels.has_regions else None, ignore_label=labels.ignore_label)
        patch = self.configuration_manager.patch_size
        return nnUNetDataLoader(dataset_val, self.batch_size, patch, patch, labels,
                                oversample_foreground_percent=self.oversample_foreground_percent,
                                transforms=transforms, probabilistic_oversampling=self.probabilistic_oversampling)

    def evaluate_validation_patches(self, num_batches: int, seed: int) -> dict:
        """Centre errors on ``num_batches`` seeded batches of validation patches (same patches for the same data,
        split, seed and batch size), as the dict written to ``localization_validation.json``."""
        loader = self._final_validation_loader()
        rng_state = np.random.get_state()
        np.random.seed(seed)
        per_patch = []
        try:
            self.network.eval()
            with torch.no_grad():
                for _ in range(num_batches):
                    batch = next(loader)
                    errors = self.validation_step(batch)["errors_mm"]
                    per_patch += [{"case": str(k), "error_mm": None if np.isnan(e) else float(e)}
                                  for k, e in zip(batch["keys"], errors)]
        finally:
            np.random.set_state(rng_state)
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
        validate, so nnU-Net's sliding-window validation does not apply)."""
        if self.local_rank != 0:
            return
        if save_probabilities:
            self.print_to_log_file("--npz ignored: a localisation model exports no probabilities")
        num_batches = self.final_validation_batches or self.num_val_iterations_per_epoch
        result = self.evaluate_validation_patches(num_batches, self.final_validation_seed)
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
