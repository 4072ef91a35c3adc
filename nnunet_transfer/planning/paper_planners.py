"""Experiment planners that write a paper's preprocessing and patch settings into ordinary nnU-Net plans.

Run them with ``nnunet-transfer plan -d ID -pl NAME`` (nnU-Net's ``-pl`` only searches its own package). Both are
nnU-Net's ``ExperimentPlanner`` with what the paper fixes put in; everything the paper does not fix (resampling,
topology rules, 2d configuration, transposition) stays nnU-Net's.

* :class:`MLEAMPaperPlanner` (paper mleam-prostate-edge-attention): spacing 0.625 x 0.625 x 1.5 mm, patch
  96 x 96 x 32 voxels, batch 16 for ``3d_fullres`` (plans ``nnUNetMLEAMPaperPlans``). The topology is nnU-Net's own
  for that patch: the planner hands nnU-Net's patch search a median shape equal to the patch, so the search starts at
  (and, being far below the memory target, ends at) the paper's patch; the real median shape is written back.
  Put the MLEAM network on top with ``nnunet-transfer plan-arch -d ID -a med3d-resnet101 --decoder mleam
  -sp nnUNetMLEAMPaperPlans`` (plan-arch keeps spacing, patch and batch).
* :class:`Med3DPlanner` (paper med3d): nnU-Net's ``ZScoreNormalization`` of every channel over the whole volume
  (``use_mask_for_norm`` false: the paper standardises with the mean and SD of the individual volume). The paper's
  percentile clip comes before it, in the raw data: ``nnunet-transfer clip-intensities``
  (:mod:`nnunet_transfer.data.intensity_clip`); clip then z-score is the paper's normalisation.
"""

from __future__ import annotations

from typing import List, Tuple, Union

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

from nnunet_transfer.errors import NotApplicableError

__all__ = ["MLEAMPaperPlanner", "Med3DPlanner", "MLEAM_PAPER_SPACING", "MLEAM_PAPER_PATCH", "MLEAM_PAPER_BATCH"]

#: 0.625 x 0.625 x 1.5 mm (x y z), in nnU-Net's array order z y x
MLEAM_PAPER_SPACING: Tuple[float, float, float] = (1.5, 0.625, 0.625)
#: 96 x 96 x 32 voxels (x y z), in array order z y x
MLEAM_PAPER_PATCH: Tuple[int, int, int] = (32, 96, 96)
MLEAM_PAPER_BATCH = 16


class MLEAMPaperPlanner(ExperimentPlanner):
    """nnU-Net's planner with the MLEAM paper's spacing, patch and batch size for ``3d_fullres``."""

    paper_patch: Tuple[int, ...] = MLEAM_PAPER_PATCH
    paper_batch_size: int = MLEAM_PAPER_BATCH

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = 'DefaultPreprocessor', plans_name: str = 'nnUNetMLEAMPaperPlans',
                 overwrite_target_spacing: Union[List[float], Tuple[float, ...], None] = None,
                 suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing or list(MLEAM_PAPER_SPACING), suppress_transpose)

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        if not data_identifier.endswith('3d_fullres'):
            return super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                       approximate_n_voxels_dataset, _cache)
        plan = super().get_plans_for_configuration(spacing, np.array(self.paper_patch), data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        if [int(p) for p in plan['patch_size']] != list(self.paper_patch):
            raise NotApplicableError(f"nnU-Net's topology rules turned the paper's patch {list(self.paper_patch)} into "
                                     f"{list(plan['patch_size'])} at spacing {list(spacing)}")
        plan['median_image_size_in_voxels'] = median_shape
        plan['batch_size'] = self.paper_batch_size
        return plan


class Med3DPlanner(ExperimentPlanner):
    """nnU-Net's planner with per-volume z-score normalisation of every channel (the Med3D paper's)."""

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = 'DefaultPreprocessor', plans_name: str = 'nnUNetMed3DPlans',
                 overwrite_target_spacing: Union[List[float], Tuple[float, ...], None] = None,
                 suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)

    def determine_normalization_scheme_and_whether_mask_is_used_for_norm(self) -> Tuple[List[str], List[bool]]:
        n = len(self.dataset_json.get('channel_names', self.dataset_json.get('modality', {})))
        return [ZScoreNormalization.__name__] * n, [False] * n
