"""The intensity normalisation a pretrained model expects, compared with the target's plans, and plans that match.

A pretrained model expects the intensities it was trained on (nnssl: z-score per image; SuPreM, the Universal Model
and VoCo: the HU window [-175, 250] scaled to [0, 1]; Models Genesis: [-1000, 1000] to [0, 1]; DoDNet: [-325, 325]
divided by 325; MedicalNet: z-score; nnU-Net-family models: nnU-Net's CT normalisation with the statistics of their
training data). ``set-pretrained`` warns when the target's plans normalise differently and
``set-pretrained --match-normalisation`` writes plans that match.

nnU-Net looks normalisation schemes up only inside its own package, so the matching plans use nnU-Net's existing
schemes, never a patched one:

- z-score: ``ZScoreNormalization`` (exact for nnssl; MedicalNet computed mean and std over the voxels > 0, nnU-Net
  over the image or, when the plans set ``use_mask_for_norm``, over the non-zero region);
- a fixed window ``(clip(x, lo, hi) - a) / b``: ``CTNormalization`` computes ``(clip(x, p00_5, p99_5) - mean) /
  std`` from the plans' ``foreground_intensity_properties_per_channel``, so writing ``p00_5 = lo, p99_5 = hi,
  mean = a, std = b`` there gives exactly the window (no residual difference);
- nnU-Net's CT normalisation of the source: ``CTNormalization`` with the source plans' statistics when the source
  carries plans (results folders and zips, v1 ``.model.pkl``), else with the target's own (stated).

The matching plans are a new plans file (``<plans>_<tag>``) whose ``data_identifier`` values carry the tag, so the
data is preprocessed again into its own folder and the original plans and data stay as they are.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.zoo.record import Intensity

__all__ = ["ExpectedNormalisation", "expected_normalisation", "normalisation_mismatch", "write_matching_plans",
           "MATCH_OPTION"]

#: the option of ``set-pretrained`` that writes the matching plans (named in the warning)
MATCH_OPTION = "--match-normalisation"
_SCHEME = {"zscore": "ZScoreNormalization", "window": "CTNormalization", "ct": "CTNormalization"}


@dataclass(frozen=True)
class ExpectedNormalisation:
    """What a checkpoint expects, where we know it from, and (nnU-Net family) its source's intensity statistics."""

    intensity: Intensity
    source: str
    #: ``{channel: {mean, std, percentile_00_5, percentile_99_5}}`` of the pretraining data, when the file has plans
    properties: Optional[Dict[str, Dict[str, float]]] = None

    @property
    def tag(self) -> str:
        return self.intensity.plans_tag


def _properties_of(plans: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Dict[str, float]]]:
    """Intensity statistics per channel from v2 plans (``foreground_intensity_properties_per_channel``) or v1 plans
    (``dataset_properties.intensityproperties``, ``sd`` for ``std``)."""
    if not isinstance(plans, Mapping):
        return None
    names = {"mean": "mean", "std": "std", "percentile_00_5": "percentile_00_5", "percentile_99_5": "percentile_99_5"}
    properties = plans.get("foreground_intensity_properties_per_channel")
    if not isinstance(properties, Mapping):
        dataset = plans.get("dataset_properties")
        properties = dataset.get("intensityproperties") if isinstance(dataset, Mapping) else None
        names["std"] = "sd"
    if not isinstance(properties, Mapping):
        return None
    try:  # the checkpoint's plans are data from elsewhere: anything malformed means "not stated"
        return {str(c): {key: float(p[name]) for key, name in names.items()} for c, p in properties.items()}
    except (KeyError, TypeError, ValueError):
        return None


def expected_normalisation(checkpoint: Union[str, Path], source_plans: Optional[Mapping[str, Any]] = None,
                           is_nnssl: bool = False) -> Optional[ExpectedNormalisation]:
    """What ``checkpoint`` expects: from its zoo record (found by file name), else from its format (nnssl files
    expect z-score; nnU-Net files with plans expect nnU-Net's CT normalisation when those plans used it); None when
    nothing says."""
    from nnunet_transfer.zoo import find_record_for_file

    record = find_record_for_file(checkpoint)
    if record is not None:
        return ExpectedNormalisation(record.expected_input.intensity, f"zoo record {record.name}",
                                     _properties_of(source_plans))
    if is_nnssl:
        return ExpectedNormalisation(Intensity("zscore", note="nnssl pretraining"), "nnssl checkpoint")
    schemes = _source_schemes(source_plans)
    if schemes and all(s == "CTNormalization" for s in schemes):
        return ExpectedNormalisation(Intensity("ct"), "the checkpoint's plans", _properties_of(source_plans))
    if schemes and all(s == "ZScoreNormalization" for s in schemes):
        return ExpectedNormalisation(Intensity("zscore"), "the checkpoint's plans")
    return None


def _source_schemes(plans: Optional[Mapping[str, Any]]) -> List[str]:
    if not isinstance(plans, Mapping):
        return []
    configurations = plans.get("configurations")
    for config in (configurations.values() if isinstance(configurations, Mapping) else ()):
        schemes = config.get("normalization_schemes") if isinstance(config, Mapping) else None
        if isinstance(schemes, (list, tuple)) and schemes:
            return [str(s) for s in schemes]
    stages = plans.get("normalization_schemes")  # nnU-Net v1: {channel: "CT" | "nonCT"}
    if isinstance(stages, Mapping):
        return ["CTNormalization" if v == "CT" else "ZScoreNormalization" for v in stages.values()]
    return []


def _window_properties(intensity: Intensity) -> Dict[str, float]:
    return {"mean": intensity.subtract, "std": intensity.divide, "percentile_00_5": intensity.lower,
            "percentile_99_5": intensity.upper}


def normalisation_mismatch(plans: Mapping[str, Any], configuration: str, expected: ExpectedNormalisation
                           ) -> Optional[str]:
    """Why ``configuration`` of ``plans`` normalises differently from what the checkpoint expects, or None."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    schemes = list(PlansManager(copy.deepcopy(dict(plans))).get_configuration(configuration).normalization_schemes)
    wanted = _SCHEME[expected.intensity.kind]
    what = f"{expected.source} expects {expected.intensity.describe()}"
    if any(s != wanted for s in schemes):
        return f"{what}; the plans normalise with {schemes}"
    properties = plans.get("foreground_intensity_properties_per_channel") or {}
    reference = ({str(c): _window_properties(expected.intensity) for c in range(len(schemes))}
                 if expected.intensity.kind == "window" else expected.properties)
    if reference:
        for channel in map(str, range(len(schemes))):
            have = properties.get(channel) or {}
            want = reference.get(channel) or next(iter(reference.values()))
            if any(abs(float(have.get(k, float("nan"))) - v) > 1e-6 * max(1.0, abs(v)) for k, v in want.items()):
                return (f"{what}; the plans' CTNormalization uses other intensity statistics for channel {channel} "
                        f"({ {k: have.get(k) for k in want} } instead of {want})")
    return None


def write_matching_plans(plans_file: Union[str, Path], expected: ExpectedNormalisation,
                         plans_name: Optional[str] = None) -> Tuple[Path, List[str]]:
    """Write ``<plans>_<tag>.json`` next to ``plans_file`` with the normalisation ``expected`` asks for.

    Returns (new plans file, notes: what matches exactly and what differs). Every configuration gets the scheme and
    a ``data_identifier`` ending in the tag (its data must be preprocessed again: ``nnUNetv2_preprocess``).
    """
    from nnunet_transfer.transfer.record import write_json_atomic

    plans_file = Path(plans_file)
    plans = json.loads(plans_file.read_text())
    name = plans_name or f"{plans.get('plans_name', plans_file.stem)}_{expected.tag}"
    new_file = plans_file.with_name(f"{name}.json")
    if new_file == plans_file:
        raise InvalidValueError(f"the matching plans would replace {plans_file}; give another plans name")
    scheme = _SCHEME[expected.intensity.kind]
    notes: List[str] = []
    new = copy.deepcopy(plans)
    new["plans_name"] = name
    for config in new.get("configurations", {}).values():
        if "normalization_schemes" in config:
            config["normalization_schemes"] = [scheme] * len(config["normalization_schemes"])
        if "data_identifier" in config:
            config["data_identifier"] = f"{config['data_identifier']}_{expected.tag}"
    channels = list((new.get("foreground_intensity_properties_per_channel") or {"0": {}}).keys())
    if expected.intensity.kind == "window":
        window = _window_properties(expected.intensity)
        new["foreground_intensity_properties_per_channel"] = {c: {**new.get(
            "foreground_intensity_properties_per_channel", {}).get(c, {}), **window} for c in channels}
        notes.append(f"CTNormalization with percentile_00_5={window['percentile_00_5']:g}, percentile_99_5="
                     f"{window['percentile_99_5']:g}, mean={window['mean']:g}, std={window['std']:g} computes "
                     f"exactly {expected.intensity.describe()} (every channel)")
    elif expected.intensity.kind == "ct":
        if expected.properties:
            new["foreground_intensity_properties_per_channel"] = {
                c: {**new.get("foreground_intensity_properties_per_channel", {}).get(c, {}),
                    **(expected.properties.get(c) or next(iter(expected.properties.values())))} for c in channels}
            notes.append("CTNormalization with the pretraining data's intensity statistics (from the checkpoint's "
                         "plans): exactly the source's normalisation")
        else:
            notes.append("CTNormalization with the target dataset's statistics: the pretraining data's statistics "
                         "are not in the file, so clipping bounds and mean/std differ from the source's")
    else:
        notes.append("ZScoreNormalization per image" + (f"; residual difference: {expected.intensity.note}"
                                                        if "MedicalNet" in expected.intensity.note else
                                                        ": as the pretraining"))
    write_json_atomic(new_file, new)
    return new_file, notes
