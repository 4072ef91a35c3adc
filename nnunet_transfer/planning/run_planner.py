"""Run an experiment planner class through nnU-Net's planning API and write ordinary nnU-Net plans.

``nnUNetv2_plan_experiment -pl NAME`` only finds planners inside nnU-Net's own package, so plugin planners
cannot be named there. nnU-Net's API function ``plan_experiment_dataset`` takes the planner *class*; this module
resolves a name (or class) and calls it, optionally extracting the fingerprint first and preprocessing after.
The resulting ``<nnUNet_preprocessed>/<dataset>/<plans_name>.json`` is used as usual with
``nnUNetv2_preprocess -d ID -plans_name NAME`` and ``nnUNetv2_train ID 3d_fullres FOLD -p NAME``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict, Optional, Sequence, Type, Union

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    ResEncUNetPlanner,
    nnUNetPlannerResEncL,
    nnUNetPlannerResEncM,
    nnUNetPlannerResEncXL,
)

from nnunet_transfer.discovery import nnunet_folder
from nnunet_transfer.planning.paper_planners import Med3DPlanner, MLEAMPaperPlanner
from nnunet_transfer.planning.res_unet_aspp_planner import ResUNetASPPPaperPlanner, ResUNetASPPPlanner
from nnunet_transfer.errors import InvalidValueError, WrongKindError

#: planner name -> class, for ``nnunet-transfer plan -pl NAME``; nnU-Net's own planners are listed too so that
#: one command plans every network of a comparison
PLANNERS: Dict[str, Type[ExperimentPlanner]] = {
    "ResUNetASPPPlanner": ResUNetASPPPlanner,
    "ResUNetASPPPaperPlanner": ResUNetASPPPaperPlanner,
    "MLEAMPaperPlanner": MLEAMPaperPlanner,
    "Med3DPlanner": Med3DPlanner,
    "ExperimentPlanner": ExperimentPlanner,
    "ResEncUNetPlanner": ResEncUNetPlanner,
    "nnUNetPlannerResEncM": nnUNetPlannerResEncM,
    "nnUNetPlannerResEncL": nnUNetPlannerResEncL,
    "nnUNetPlannerResEncXL": nnUNetPlannerResEncXL,
}


def resolve_planner(planner: Union[str, Type[ExperimentPlanner]]) -> Type[ExperimentPlanner]:
    """A planner class from a class, a name in :data:`PLANNERS`, or a dotted path ``package.module.Class``."""
    if isinstance(planner, type):
        cls = planner
    elif planner in PLANNERS:
        cls = PLANNERS[planner]
    elif isinstance(planner, str) and "." in planner:
        module_name, _, class_name = planner.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as e:
            raise InvalidValueError(f"Experiment planner {planner!r} cannot be imported ({e}). Give one of "
                                    f"{sorted(PLANNERS)} or an importable 'package.module.Class' path.") from e
    else:
        raise InvalidValueError(f"Unknown experiment planner {planner!r}. Known names: {sorted(PLANNERS)}; a dotted "
                                f"'package.module.Class' path also works.")
    if not (isinstance(cls, type) and issubclass(cls, ExperimentPlanner)):
        raise WrongKindError(
            f"Experiment planner {planner!r} resolves to {cls!r}, which is not a subclass of nnU-Net's "
            f"ExperimentPlanner.")
    return cls


def plan_experiment(dataset_id: int, planner: Union[str, Type[ExperimentPlanner]],
                    gpu_memory_target_gb: Union[float, None] = None, plans_name: Union[str, None] = None,
                    preprocess: bool = False, configurations: Sequence[str] = ("3d_fullres",),
                    num_processes: int = 2, *, extract_fingerprint: bool = False,
                    spacing: Optional[Sequence[float]] = None, patch_size: Optional[Sequence[int]] = None) -> Path:
    """Plan dataset ``dataset_id`` with ``planner`` (class or name) and return the written plans file.

    The dataset fingerprint (``nnUNetv2_extract_fingerprint``) must exist; with ``extract_fingerprint=True`` it is
    extracted here if missing (never overwritten). ``gpu_memory_target_gb`` and ``plans_name`` override the
    planner's defaults (8 GB and e.g. ``nnUNetResUNetASPPPlans``). With ``preprocess=True`` the given
    ``configurations`` are preprocessed with ``num_processes`` workers, as ``nnUNetv2_preprocess`` would.
    Existing plans of the same name keep their extra (user-added) configurations, as in nnU-Net.
    ``spacing`` (Z Y X, mm) is nnU-Net's ``overwrite_target_spacing`` of 3d_fullres; ``patch_size`` (Z Y X) fixes its
    patch, topology and batch size then following nnU-Net's rules for that patch
    (:mod:`nnunet_transfer.planning.fixed_patch`).
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )
    from nnunet_transfer.dataset_lookup import dataset_name as resolve_dataset_name

    planner_cls = resolve_planner(planner)
    if spacing is not None and (len(spacing) != 3 or min(float(v) for v in spacing) <= 0):
        raise ValueError(f"--spacing needs three positive numbers Z Y X (mm), got {list(spacing)}")
    if patch_size is not None:
        from nnunet_transfer.planning.fixed_patch import fixed_patch_planner

        planner_cls = fixed_patch_planner(planner_cls, patch_size)
    nnunet_folder("nnUNet_raw")  # planning reads the raw dataset: fail early with the fix
    preprocessed = nnunet_folder("nnUNet_preprocessed")
    dataset_name = resolve_dataset_name(dataset_id)

    fingerprint = preprocessed / dataset_name / "dataset_fingerprint.json"
    if not fingerprint.is_file():
        if not extract_fingerprint:
            raise FileNotFoundError(
                f"The dataset fingerprint {fingerprint} is missing; planning needs it. Run "
                f"`nnUNetv2_extract_fingerprint -d {dataset_id}` first (or call plan_experiment with "
                f"extract_fingerprint=True).")
        extract_fingerprint_dataset(dataset_id, num_processes=num_processes, check_dataset_integrity=True,
                                    clean=False, verbose=False, show_progress_bar=False)

    _, plans_identifier = plan_experiment_dataset(
        dataset_id, planner_cls, gpu_memory_target_gb, overwrite_plans_name=plans_name,
        overwrite_target_spacing=None if spacing is None else [float(v) for v in spacing])
    plans_file = preprocessed / dataset_name / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise RuntimeError(f"Planner {planner_cls.__name__} finished but did not write {plans_file}.")

    if preprocess:
        preprocess_dataset(dataset_id, plans_identifier, tuple(configurations), [num_processes] * len(configurations),
                           verbose=False, show_progress_bar=False)
    return plans_file
