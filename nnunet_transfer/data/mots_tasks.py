"""The MOTS task table: the one place that says what each of DoDNet's seven partially labelled tasks means.

Every other module (synthetic data, the converter, the dynamic-head network, the partial-label loss, the
trainer's per-task validation) derives its numbers from this table, so the label semantics cannot drift
apart between data and training.

Unified label space (what the converted nnU-Net dataset stores, one integer map per case):

====  ===================  =====================================
 id    name                 source value it comes from
====  ===================  =====================================
 0     background           0 (and everything a task leaves out)
 1     liver                LiTS 1
 2     liver_tumor          LiTS 2
 3     kidney               KiTS19 1
 4     kidney_tumor         KiTS19 2
 5     hepatic_vessel       MSD Task08 1
 6     hepatic_vessel_tumor MSD Task08 2
 7     pancreas             MSD Task07 1
 8     pancreas_tumor       MSD Task07 2
 9     colon_tumor          MSD Task10 1
 10    lung_tumor           MSD Task06 1
 11    spleen               MSD Task09 1
====  ===================  =====================================

The network predicts nnU-Net *regions* (sigmoid channels), one per labelled (task, organ|tumor) pair, in
the order of :data:`OUTPUT_CHANNELS`. A region is a set of unified labels, e.g. DoDNet's liver channel is
"label >= 1" of LiTS, i.e. unified labels {1, 2}; the hepatic-vessel channel is "label == 1" only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple
from nnunet_transfer.errors import InvalidValueError, NotApplicableError

NUM_TASKS = 7
HEAD_OUTPUTS_PER_TASK = 2  # channel 0 organ, channel 1 tumor (DoDNet)
ORGAN, TUMOR = 0, 1


@dataclass(frozen=True)
class MOTSTask:
    """One partially labelled source dataset of MOTS and the meaning of its labels."""

    index: int
    name: str
    source: str
    #: source label value -> unified label value
    label_map: Dict[int, int]
    #: unified labels forming the organ channel (None: the source does not label the organ)
    organ_region: Optional[Tuple[int, ...]]
    #: unified labels forming the tumor channel (None: the source does not label a tumor)
    tumor_region: Optional[Tuple[int, ...]]
    organ_name: Optional[str]
    tumor_name: Optional[str]
    #: scans in DoDNet's MOTS train / test split (for documentation and the synthetic generator's ratios)
    paper_train_cases: int
    paper_test_cases: int

    @property
    def allowed_source_labels(self) -> Tuple[int, ...]:
        return (0, *sorted(self.label_map))


TASKS: Tuple[MOTSTask, ...] = (
    MOTSTask(0, "liver", "LiTS", {1: 1, 2: 2}, (1, 2), (2,), "liver", "liver_tumor", 104, 27),
    MOTSTask(1, "kidney", "KiTS19", {1: 3, 2: 4}, (3, 4), (4,), "kidney", "kidney_tumor", 168, 42),
    MOTSTask(2, "hepatic_vessel", "Task08_HepaticVessel", {1: 5, 2: 6}, (5,), (6,),
             "hepatic_vessel", "hepatic_vessel_tumor", 242, 61),
    MOTSTask(3, "pancreas", "Task07_Pancreas", {1: 7, 2: 8}, (7, 8), (8,), "pancreas", "pancreas_tumor", 224, 57),
    MOTSTask(4, "colon", "Task10_Colon", {1: 9}, None, (9,), None, "colon_tumor", 100, 26),
    MOTSTask(5, "lung", "Task06_Lung", {1: 10}, None, (10,), None, "lung_tumor", 50, 13),
    MOTSTask(6, "spleen", "Task09_Spleen", {1: 11}, (11,), None, "spleen", None, 32, 9),
)

TASK_BY_NAME: Dict[str, MOTSTask] = {t.name: t for t in TASKS}


@dataclass(frozen=True)
class OutputChannel:
    """One sigmoid output channel of the MOTS network = one nnU-Net region."""

    index: int
    task: int
    kind: int  # ORGAN or TUMOR
    name: str
    region: Tuple[int, ...]
    #: unified label value written for this channel by nnU-Net's regions_class_order
    label: int


def _build_output_channels() -> Tuple[OutputChannel, ...]:
    channels: List[OutputChannel] = []
    for t in TASKS:
        for kind, region, name in ((ORGAN, t.organ_region, t.organ_name), (TUMOR, t.tumor_region, t.tumor_name)):
            if region is None:
                continue
            # the label written for the region is the most specific unified label it stands for
            label = region[0] if kind == ORGAN else region[-1]
            channels.append(OutputChannel(len(channels), t.index, kind, name, tuple(region), label))
    return tuple(channels)


OUTPUT_CHANNELS: Tuple[OutputChannel, ...] = _build_output_channels()
NUM_OUTPUT_CHANNELS = len(OUTPUT_CHANNELS)  # 11


def unified_labels() -> Dict[str, int]:
    """Unified label name -> value (background included)."""
    labels = {"background": 0}
    for t in TASKS:
        for src, uni in sorted(t.label_map.items()):
            is_tumor = t.tumor_region is not None and uni == t.tumor_region[-1]
            labels[t.tumor_name if is_tumor else t.organ_name] = uni
    return labels


def nnunet_region_labels() -> Tuple[Dict[str, object], List[int]]:
    """The ``labels`` and ``regions_class_order`` entries of the MOTS dataset.json (region-based training).

    Channel order equals :data:`OUTPUT_CHANNELS`; organ channels come before tumor channels of the same
    task so that nnU-Net's region-to-label conversion lets the tumor overwrite its organ.
    """
    labels: Dict[str, object] = {"background": 0}
    for ch in OUTPUT_CHANNELS:
        labels[ch.name] = list(ch.region) if len(ch.region) > 1 else ch.region[0]
    return labels, [ch.label for ch in OUTPUT_CHANNELS]


def channel_task_matrix():
    """(NUM_TASKS, NUM_OUTPUT_CHANNELS) bool array: which output channels each task's scans label."""
    import numpy as np

    m = np.zeros((NUM_TASKS, NUM_OUTPUT_CHANNELS), dtype=bool)
    for ch in OUTPUT_CHANNELS:
        m[ch.task, ch.index] = True
    return m


def head_channel_index():
    """(NUM_OUTPUT_CHANNELS,) index into the flattened (task, organ|tumor) head outputs for each channel."""
    import numpy as np

    return np.array([ch.task * HEAD_OUTPUTS_PER_TASK + ch.kind for ch in OUTPUT_CHANNELS], dtype=np.int64)


#: the key under which converters record the case-to-task map in dataset.json
DATASET_JSON_KEY = "nnunet_transfer"


def read_case_to_task(dataset_json: dict) -> Dict[str, int]:
    """The case -> task index map ``nnunet-transfer convert mots`` records in dataset.json."""
    record = dataset_json.get(DATASET_JSON_KEY, {})
    mapping = record.get("case_to_task") if isinstance(record, dict) else None
    if mapping and not (isinstance(mapping, dict) and all(isinstance(t, int) and not isinstance(t, bool)
                                                          for t in mapping.values())):
        raise InvalidValueError(f"dataset.json: '{DATASET_JSON_KEY}.case_to_task' must map case ids to task "
                                "indices (integers)", fix="convert the dataset again with `nnunet-transfer convert "
                                                          "mots` or repair the map")
    if not mapping:
        raise NotApplicableError(
            f"dataset.json has no '{DATASET_JSON_KEY}.case_to_task' map, so the task of each case is "
            "unknown. Create the dataset with `nnunet-transfer convert mots SOURCE -d ID` (or add the map), then "
            "re-run nnUNetv2_plan_and_preprocess so the preprocessed dataset.json carries it.")
    return {case: int(task) for case, task in mapping.items()}
