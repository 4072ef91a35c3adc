"""``nnunet-transfer predict-tasks``: one label map per case *and task* from a MOTS (DoDNet) model.

Stock ``nnUNetv2_predict`` evaluates all seven task heads and nnU-Net's region conversion writes one merged map
in which a later region overwrites an earlier one (``regions_class_order``: liver, liver tumour, kidney, kidney
tumour, hepatic vessel, hepatic-vessel tumour, pancreas, pancreas tumour, colon tumour, lung tumour, spleen), so
overlapping structures are lost (hepatic vessels inside the liver, a liver tumour also taken for a
hepatic-vessel tumour). Here nnU-Net's own predictor (preprocessing, sliding window with Gaussian weighting,
mirroring, ensemble of the folds, resampling back to the image) gives the per-region probabilities once per
case; each task's label map is then nnU-Net's region conversion applied to that task's channels only (organ,
then tumour), i.e. exactly what the task's own head predicts, as DoDNet evaluates it. Maps hold the unified
label values of ``dataset.json`` and are written to ``OUT/<task>/<case>.nii.gz``, the layout ``evaluate mots``
reads. The task heads are independent given the image, so one all-task pass equals seven conditioned passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from nnunet_transfer.data.convert_mots import select_tasks
from nnunet_transfer.data.mots_tasks import OUTPUT_CHANNELS, MOTSTask
from nnunet_transfer.evaluation.dodnet import dodnet_postprocess
from nnunet_transfer.errors import InvalidValueError

PathLike = Union[str, Path]


def task_label_map(probabilities: np.ndarray, task: MOTSTask, label_manager, postprocess: Optional[str] = None
                   ) -> np.ndarray:
    """The label map of one task from all-region probabilities (C, *spatial): its channels only, converted
    by nnU-Net's ``LabelManager`` (organ, then tumour over it); optionally DoDNet's post-processing."""
    own = np.zeros(len(OUTPUT_CHANNELS), dtype=bool)
    own[[ch.index for ch in OUTPUT_CHANNELS if ch.task == task.index]] = True
    masked = np.where(own.reshape(-1, *([1] * (probabilities.ndim - 1))), probabilities, 0).astype(np.float32)
    seg = np.asarray(label_manager.convert_probabilities_to_segmentation(masked), dtype=np.uint8)
    if postprocess is None:
        return seg
    if postprocess != "dodnet":
        raise InvalidValueError(f"postprocess must be None or 'dodnet', got {postprocess!r}")
    channels = {ch.kind: ch for ch in OUTPUT_CHANNELS if ch.task == task.index}
    masks = {kind: np.isin(seg, ch.region) for kind, ch in channels.items()}
    organ, tumour = dodnet_postprocess(task.index, masks.get(0), masks.get(1))
    out = np.zeros_like(seg)
    for kind, mask in ((0, organ), (1, tumour)):
        if mask is not None:
            out[mask] = channels[kind].label
    return out


def predict_tasks(input_dir: PathLike, output_dir: PathLike, dataset: Union[int, str], configuration: str,
                  trainer: str, folds: Sequence[Union[int, str]], tasks: Optional[Sequence[str]] = None,
                  plans: str = "nnUNetPlans", checkpoint: str = "checkpoint_final.pth", device: str = "cuda",
                  use_mirroring: bool = True, tile_step_size: float = 0.5,
                  postprocess: Optional[str] = None, trusted: Sequence[str] = ()) -> List[Path]:
    """Predict every case of ``input_dir`` (nnU-Net naming, ``CASE_0000.nii.gz``) with the trained MOTS model and
    write ``output_dir/<task>/<CASE>.nii.gz`` for each requested task (default: all seven). Returns the files.

    The model folder's plans.json is checked as data and its checkpoints are read with ``weights_only``
    (:func:`~nnunet_transfer.inference.checked_predictor.initialize_checked_predictor`); ``trusted``: architecture
    class names the user trusts (``--trust-architecture``)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    from nnunet_transfer.inference.checked_predictor import initialize_checked_predictor
    from nnunet_transfer.inference.export import _fold_value, _input_cases, _torch_device

    chosen = select_tasks(tasks)
    model_dir = Path(get_output_folder(dataset, trainer, plans, configuration))
    if not model_dir.is_dir():
        raise FileNotFoundError(f"no trained model folder {model_dir}: train it first (nnUNetv2_train {dataset} "
                                f"{configuration} FOLD -tr {trainer} -p {plans}) or fix -d/-tr/-p/-c")
    dev = _torch_device(device)
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=dev.type == "cuda", device=dev, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    initialize_checked_predictor(predictor, model_dir, [_fold_value(f) for f in folds], checkpoint, trusted)
    if predictor.label_manager.num_segmentation_heads != len(OUTPUT_CHANNELS):
        raise InvalidValueError(f"{model_dir} is not a MOTS model ({predictor.label_manager.num_segmentation_heads} "
                                f"outputs, MOTS has {len(OUTPUT_CHANNELS)} regions); predict it with nnUNetv2_predict")
    ending = predictor.dataset_json["file_ending"]
    cases = _input_cases(Path(input_dir), predictor.dataset_json)
    output_dir = Path(output_dir)
    written: List[Path] = []
    reader_writer = predictor.plans_manager.image_reader_writer_class()
    for n, files in enumerate(cases, 1):
        case = Path(files[0]).name[: -len(ending) - 5]
        image, properties = reader_writer.read_images(files)
        _, probabilities = predictor.predict_single_npy_array(image, properties, None, None, True)
        for task in chosen:
            target = output_dir / task.name / f"{case}{ending}"
            target.parent.mkdir(parents=True, exist_ok=True)
            seg = task_label_map(np.asarray(probabilities), task, predictor.label_manager, postprocess)
            reader_writer.write_seg(seg, str(target), properties)
            written.append(target)
        print(f"predict-tasks: {n}/{len(cases)} cases ({case}: {', '.join(t.name for t in chosen)})", flush=True)
    return written
