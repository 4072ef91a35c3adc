"""The MOTS trainers' dataset classes: nnU-Net's, plus a report of each loaded case (no runtime class swapping)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from nnunetv2.training.dataloading.nnunet_dataset import (comp_blosc2_params, infer_dataset_class,
                                                          nnUNetDatasetBlosc2, nnUNetDatasetNumpy)

from nnunet_transfer.trainers.task_datasets import (TaskConditionedDatasetBlosc2, TaskConditionedDatasetNumpy,
                                                    on_case_loaded, task_conditioned_dataset_class)


def _folder(tmp_path):
    data = np.random.default_rng(0).normal(size=(1, 4, 8, 8)).astype(np.float32)
    seg = (data > 0).astype(np.int16)
    blocks, chunks = comp_blosc2_params(data.shape, [4, 8, 8], data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, [4, 8, 8], seg.itemsize)
    for case in ("a", "b"):
        nnUNetDatasetBlosc2.save_case(data, seg, {"spacing": [1, 1, 1]}, str(tmp_path / case), chunks=chunks,
                                      blocks=blocks, chunks_seg=chunks_seg, blocks_seg=blocks_seg)
    return str(tmp_path)


def test_nnunets_choice_maps_to_our_subclass():
    assert task_conditioned_dataset_class(nnUNetDatasetBlosc2) is TaskConditionedDatasetBlosc2
    assert task_conditioned_dataset_class(nnUNetDatasetNumpy) is TaskConditionedDatasetNumpy
    assert task_conditioned_dataset_class(TaskConditionedDatasetNumpy) is TaskConditionedDatasetNumpy
    assert issubclass(TaskConditionedDatasetBlosc2, nnUNetDatasetBlosc2)
    with pytest.raises(TypeError, match="no task-conditioned variant"):
        task_conditioned_dataset_class(dict)


def test_loaded_cases_reach_the_listener_only_inside_the_block(tmp_path):
    folder = _folder(tmp_path)
    dataset_class = task_conditioned_dataset_class(infer_dataset_class(folder))
    dataset = dataset_class(folder, ["a", "b"])
    seen = []
    with on_case_loaded(seen.append):
        data, seg, _, _ = dataset.load_case("b")
        dataset.load_case("a")
    dataset.load_case("b")
    assert seen == ["b", "a"]
    reference = nnUNetDatasetBlosc2(folder, ["b"]).load_case("b")
    np.testing.assert_array_equal(np.asarray(data), np.asarray(reference[0]))
    # a module-level class: nnU-Net's background loaders can pickle the dataset
    assert type(pickle.loads(pickle.dumps(dataset))) is TaskConditionedDatasetBlosc2
