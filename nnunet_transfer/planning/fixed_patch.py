"""Plans with a given target spacing and patch size, the rest derived by nnU-Net's own planning rules.

A paper's preprocessing often fixes both (the KiTS21 transfer paper: 0.78125 mm isotropic, 128^3 patches; MLEAM:
0.625 x 0.625 x 1.5 mm, 96 x 96 x 32). nnU-Net's planners take a target spacing (``overwrite_target_spacing``) but
always search the patch. :func:`fixed_patch_planner` derives a subclass of any nnU-Net planner class whose 3d_fullres
configuration keeps the requested patch:

* the patch is handed to the planner's own ``get_plans_for_configuration`` as the starting patch (in place of the
  median image shape, which only bounds the starting patch), so nnU-Net's ``get_pool_and_conv_props`` derives the
  pooling topology and kernel sizes for exactly that patch, and nnU-Net's rule sets the batch size (memory estimate
  against the GPU-memory target, at most 5 % of the dataset's voxels per batch, at least 2);
* when the patch needs more memory than the target, nnU-Net would shrink it; here the target is raised to what the
  patch needs by nnU-Net's own estimate (printed), which gives nnU-Net's minimum batch size of 2;
* a patch that nnU-Net's topology rule cannot keep as given (not divisible by what its pooling needs, or larger than
  nnU-Net's starting patch for that spacing) is refused with the reason.

Axis order: spacing and patch are given as Z Y X, the image array order nnU-Net reads. nnU-Net moves the coarsest
axis first (``transpose_forward``); the plans hold both in that order (unchanged when Z is the coarsest or all are
equal).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Type

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

FULLRES = "3d_fullres"


class FixedPatchError(ValueError):
    """The requested patch cannot be planned as given."""


def fixed_patch_planner(planner: Type[ExperimentPlanner], patch_size: Sequence[int]) -> Type[ExperimentPlanner]:
    """A subclass of ``planner`` whose 3d_fullres configuration has exactly ``patch_size`` (Z Y X).

    Combine with nnU-Net's ``overwrite_target_spacing`` (``plan_experiment(..., spacing=...)``) for a fixed spacing.
    """
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 3 or min(patch) < 1:
        raise FixedPatchError(f"--patch-size needs three positive integers Z Y X, got {list(patch_size)}")

    class FixedPatchPlanner(planner):  # type: ignore[valid-type, misc]
        fixed_patch_size: Tuple[int, int, int] = patch

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            #: (patch, nnU-Net's memory estimate) of every estimate the planning computed, in order
            self._estimates: List[Tuple[Tuple[int, ...], float]] = []

        def static_estimate_VRAM_usage(self, patch_size, *args, **kwargs):  # noqa: N802 (nnU-Net's name)
            estimate = super().static_estimate_VRAM_usage(patch_size, *args, **kwargs)
            self._estimates.append((tuple(int(p) for p in patch_size), float(estimate)))
            return estimate

        def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                        approximate_n_voxels_dataset: float, _cache: dict) -> dict:
            if data_identifier != self.generate_data_identifier(FULLRES):
                return super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                           approximate_n_voxels_dataset, _cache)
            forward, _ = self.determine_transpose()
            wanted = [self.fixed_patch_size[i] for i in forward]
            self._estimates.clear()
            plan = super().get_plans_for_configuration(spacing, wanted, data_identifier,
                                                       approximate_n_voxels_dataset, {})
            if [int(p) for p in plan["patch_size"]] != wanted:
                needed = self._memory_target_for(wanted)
                if needed is None:
                    raise FixedPatchError(_topology_refusal(wanted, plan["patch_size"], spacing))
                print(f"[plan] patch {wanted} needs about {needed:.1f} GB by nnU-Net's estimate (target "
                      f"{self.UNet_vram_target_GB:g} GB): planning it at that memory, which gives nnU-Net's "
                      f"minimum batch size")
                target = self.UNet_vram_target_GB
                self.UNet_vram_target_GB = needed
                try:
                    plan = super().get_plans_for_configuration(spacing, wanted, data_identifier,
                                                               approximate_n_voxels_dataset, {})
                finally:
                    self.UNet_vram_target_GB = target
                if [int(p) for p in plan["patch_size"]] != wanted:  # not expected: the estimate now fits
                    raise FixedPatchError(_topology_refusal(wanted, plan["patch_size"], spacing))
            plan["median_image_size_in_voxels"] = median_shape
            return plan

        def _memory_target_for(self, patch: List[int]) -> "float | None":
            """The smallest GPU-memory target (GB) at which nnU-Net's loop keeps ``patch``: its condition
            ``estimate / ref_bs * 2 <= reference * target / ref_GB`` solved for the target. None when no estimate
            was made for that patch (nnU-Net's topology rule changed it before any estimate)."""
            estimates = [e for p, e in self._estimates if list(p) == list(patch)]
            if not estimates:
                return None
            reference = self.UNet_reference_val_3d
            ref_bs = self.UNet_reference_val_corresp_bs_3d
            return estimates[0] / ref_bs * 2 / reference * self.UNet_reference_val_corresp_GB * (1 + 1e-6)

    FixedPatchPlanner.__name__ = FixedPatchPlanner.__qualname__ = planner.__name__
    return FixedPatchPlanner


def _topology_refusal(wanted: Sequence[int], planned: Sequence[int], spacing: Sequence[float]) -> str:
    return (f"nnU-Net's topology rule (get_pool_and_conv_props) cannot keep the patch {list(wanted)} at spacing "
            f"{[round(float(s), 5) for s in spacing]}: it plans {[int(p) for p in planned]} instead. Give a patch "
            f"each side of which is divisible by 2 ** (the poolings along it), e.g. {[int(p) for p in planned]}, "
            f"or one no larger than nnU-Net's starting patch for this spacing.")


def pooling_summary(plan: Dict) -> Dict[str, object]:
    """The parts of a configuration that nnU-Net derives from the patch (for messages and tests)."""
    kwargs = plan["architecture"]["arch_kwargs"]
    return {"patch_size": list(plan["patch_size"]), "spacing": [float(s) for s in plan["spacing"]],
            "strides": kwargs["strides"], "kernel_sizes": kwargs["kernel_sizes"], "batch_size": plan["batch_size"],
            "n_stages": kwargs["n_stages"], "divisible_by": [int(np.prod([s[i] for s in kwargs["strides"]]))
                                                            for i in range(len(plan["patch_size"]))]}
