"""nnU-Net's postprocessing of an installed model, read from ``postprocessing.json`` instead of the pickle.

``nnUNetv2_find_best_configuration`` stores the postprocessing it chose twice next to the cross-validation results:
``postprocessing.pkl`` (functions and arguments, pickled; ``nnUNetv2_apply_postprocessing`` unpickles it) and
``postprocessing.json`` (the same as function names and arguments). A model zip is untrusted, so the pickle is never
installed; the JSON gives the same postprocessing with nothing unpickled: its function names are looked up in an
allow-list of nnU-Net's postprocessing functions and nnU-Net's own ``apply_postprocessing_to_folder`` applies them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from nnunet_transfer.errors import NnUNetTransferError

POSTPROCESSING_JSON = "postprocessing.json"


def _allowed_functions() -> Dict[str, Callable]:
    """nnU-Net's postprocessing functions that ``postprocessing.json`` may name."""
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation

    return {remove_all_but_largest_component_from_segmentation.__name__:
            remove_all_but_largest_component_from_segmentation}


def _as_regions(value: Union[int, list]) -> Union[int, tuple, List[Union[int, tuple]]]:
    """JSON lists back to nnU-Net's types: a region is a tuple of labels, several of them a list."""
    if isinstance(value, list):
        if value and all(isinstance(v, list) for v in value):
            return [tuple(v) for v in value]
        return tuple(value)
    return value


def postprocessing_file(model_dir: Path, folds: Sequence[int]) -> Path:
    """Where nnU-Net keeps the postprocessing chosen for the cross-validation of ``folds``."""
    return model_dir / f"crossval_results_folds_{'_'.join(str(f) for f in folds)}" / POSTPROCESSING_JSON


def read_postprocessing(path: Path) -> Optional[Tuple[List[Callable], List[dict]]]:
    """Functions and arguments of a ``postprocessing.json`` (None when the file is not there)."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    allowed = _allowed_functions()
    names, kwargs = data.get("postprocessing_fns", []), data.get("postprocessing_kwargs", [])
    unknown = [n for n in names if n not in allowed]
    if unknown or len(names) != len(kwargs):
        raise NnUNetTransferError(f"{path} names postprocessing steps {unknown or names} that cannot be applied "
                                  f"(known: {sorted(allowed)})", file=path,
                                  fix="predict without it, or apply it with nnUNetv2_apply_postprocessing")
    return ([allowed[n] for n in names],
            [{k: _as_regions(v) if k == "labels_or_regions" else v for k, v in kw.items()} for kw in kwargs])


def apply_model_postprocessing(model_dir: Path, folds: Sequence[int], folder: Path, num_processes: int = 1) -> int:
    """Apply the postprocessing nnU-Net chose for this model and folds to the predictions in ``folder`` (in place,
    with ``num_processes`` worker processes, 0: in this process); returns the number of steps (0: it has none)."""
    from nnunetv2.postprocessing.remove_connected_components import (apply_postprocessing_to_folder,
                                                                     load_postprocess_save)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    steps = read_postprocessing(postprocessing_file(model_dir, folds))
    if not steps or not steps[0]:
        return 0
    if num_processes > 0:
        apply_postprocessing_to_folder(str(folder), str(folder), steps[0], steps[1],
                                       plans_file_or_dict=str(model_dir / "plans.json"),
                                       dataset_json_file_or_dict=str(model_dir / "dataset.json"),
                                       num_processes=num_processes)
    else:  # in this process, one file after the other (nnU-Net's own per-file step)
        reader_writer = PlansManager(str(model_dir / "plans.json")).image_reader_writer_class()
        ending = json.loads((model_dir / "dataset.json").read_text())["file_ending"]
        for path in sorted(folder.glob(f"*{ending}")):
            load_postprocess_save(str(path), str(path), reader_writer, steps[0], steps[1])
    return len(steps[0])
