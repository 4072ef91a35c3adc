"""Property-based tests (hypothesis) over every reader of outside input: whatever bytes or structure arrive, the result
is a valid object or one of our error types (one line naming the file), never another exception and never a file
written outside the target. Examples are derandomized and few per reader (see the profile in conftest.py), so the
run is short and repeatable."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

from nnunet_transfer.errors import NnUNetTransferError  # noqa: E402

#: JSON values of any shape (what a hand-edited or forged JSON file can hold)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
                    | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                                                       max_size=4),
                    max_leaves=12)


def _folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="fuzz-")


def _only_ours(call, *args, **kwargs):
    """Run ``call``; return its result, or None when it raised one of our error types (anything else propagates and
    fails the test). Our errors must carry a message that names what went wrong."""
    try:
        return call(*args, **kwargs)
    except NnUNetTransferError as e:
        assert str(e).strip()
        return None


def _files(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


# ------------------------------------------------------------------------------------------ checkpoint files

def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


GOOD_CHECKPOINT = _torch_bytes({"network_weights": {
    "encoder.stages.0.0.convs.0.conv.weight": torch.zeros(2, 1, 3, 3, 3),
    "decoder.seg_layers.0.weight": torch.zeros(2, 2, 1, 1, 1)}})

TENSORS = st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype),
                    st.lists(st.integers(0, 3), max_size=3).map(tuple),
                    st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool, torch.uint8]))
#: structures a torch file may hold that a data-only load accepts: nested containers of tensors and plain values
STRUCTURES = st.recursive(TENSORS | st.none() | st.integers(-5, 5) | st.text(max_size=8) | st.floats(),
                          lambda children: st.lists(children, max_size=3)
                          | st.dictionaries(st.sampled_from(["network_weights", "state_dict", "model", "module",
                                                             "encoder.w", "conv1.weight", "init_args", "x"]),
                                            children, max_size=4),
                          max_leaves=10)


def _read_source(data: bytes, name: str = "ckpt.pth"):
    from nnunet_transfer.transfer.weights import read_source

    with _folder() as d:
        path = Path(d) / name
        path.write_bytes(data)
        before = _files(Path(d))
        result = _only_ours(read_source, path)
        assert _files(Path(d)) == before  # a reader writes nothing
    return result


@given(st.binary(max_size=2048))
def test_random_bytes_as_a_checkpoint(data):
    _read_source(data)


@given(st.integers(0, len(GOOD_CHECKPOINT)), st.binary(max_size=64))
def test_truncated_or_patched_torch_zips(cut, tail):
    _read_source(GOOD_CHECKPOINT[:cut] + tail)


@given(STRUCTURES)
def test_torch_files_with_odd_structures(obj):
    result = _read_source(_torch_bytes(obj))
    if result is not None:
        assert all(isinstance(v, torch.Tensor) for v in result.tensors.values())


@given(st.binary(max_size=512))
def test_random_bytes_as_a_results_zip(data):
    _read_source(data, "model.zip")


# ------------------------------------------------------------------------------------------ model zips

def _zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@given(JSON)
def test_forged_export_manifests(manifest):
    from nnunet_transfer.inference.export import MANIFEST_NAME, read_manifest

    with _folder() as d:
        path = Path(d) / "model.zip"
        path.write_bytes(_zip({MANIFEST_NAME: json.dumps(manifest)}))
        result = _only_ours(read_manifest, path)
    if result is not None:
        assert isinstance(result["configurations"], list) and isinstance(result["checkpoint_sha256"], dict)


@given(st.dictionaries(st.sampled_from(["format", "format_version", "dataset", "trainer", "plans", "configurations",
                                        "folds", "checkpoint", "checkpoint_sha256", "trainer_source",
                                        "plugin_version"]), JSON, max_size=11))
def test_manifests_with_the_right_keys_and_wrong_values(entries):
    from nnunet_transfer.inference.export import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, read_manifest

    manifest = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, **entries}
    with _folder() as d:
        path = Path(d) / "model.zip"
        path.write_bytes(_zip({MANIFEST_NAME: json.dumps(manifest)}))
        _only_ours(read_manifest, path)


@given(st.binary(max_size=1024))
def test_random_bytes_as_a_model_zip(data):
    from nnunet_transfer.inference.export import read_manifest

    with _folder() as d:
        path = Path(d) / "model.zip"
        path.write_bytes(data)
        _only_ours(read_manifest, path)


@given(st.sampled_from(["../evil.txt", "../../evil.txt", "/tmp/evil.txt", "a/../../evil.txt", "C:/evil.txt",
                        "Dataset001_X/../../evil.txt", "..\\evil.txt"]))
def test_zip_members_never_land_outside_the_results_folder(member):
    from nnunet_transfer.inference.export import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, install_model

    manifest = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "dataset": "Dataset001_X",
                "trainer": "nnUNetTrainer", "plans": "nnUNetPlans", "configurations": ["3d_fullres"], "folds": [0],
                "checkpoint": "checkpoint_final.pth", "checkpoint_sha256": {}, "trainer_source": "nnunetv2",
                "plugin_version": "0"}
    with _folder() as d:
        root = Path(d)
        (root / "results").mkdir()
        (root / "model.zip").write_bytes(_zip({MANIFEST_NAME: json.dumps(manifest), member: b"payload"}))
        before = _files(root)
        _only_ours(install_model, root / "model.zip", root / "results")
        assert {p for p in _files(root) - before if not str(p).startswith("results")} == set()
        assert not any(p.name == "evil.txt" for p in root.rglob("*"))


# ------------------------------------------------------------------------------------------ plans / dataset JSON

@given(JSON)
def test_plans_files_when_a_configuration_is_looked_up(plans):
    from nnunet_transfer.utils.configuration_names import require_configurations

    with _folder() as d:
        path = Path(d) / "plans.json"
        path.write_text(json.dumps(plans))
        _only_ours(require_configurations, path, ["3d_fullres"])


@given(st.binary(max_size=256))
def test_plans_files_that_are_no_json(data):
    from nnunet_transfer.utils.configuration_names import require_configurations

    with _folder() as d:
        path = Path(d) / "plans.json"
        path.write_bytes(data)
        _only_ours(require_configurations, path, ["3d_fullres"])


@given(JSON)
def test_dataset_json_case_to_task_maps(value):
    from nnunet_transfer.data.mots_tasks import DATASET_JSON_KEY, read_case_to_task

    for dataset_json in ({DATASET_JSON_KEY: value}, {DATASET_JSON_KEY: {"case_to_task": value}}):
        result = _only_ours(read_case_to_task, dataset_json)
        if result is not None:
            assert all(isinstance(k, str) and isinstance(t, int) for k, t in result.items())


@given(JSON | st.binary(max_size=64))
def test_transfer_source_files(value):
    from nnunet_transfer.trainers.finetune import read_transfer_source

    with _folder() as d:
        path = Path(d) / "transfer_source.json"
        path.write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())
        _only_ours(read_transfer_source, path)


@given(JSON | st.binary(max_size=64))
def test_point_files(value):
    from nnunet_transfer.data.point_labels import read_points_file

    with _folder() as d:
        path = Path(d) / "points.json"
        path.write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())
        _only_ours(read_points_file, path)


# ------------------------------------------------------------------------------------------ DoDNet list files

LIST_LINES = st.lists(st.one_of(st.text(max_size=40), st.sampled_from([
    "liver/volume-3.nii liver/segmentation-3.nii", "0Liver/imagesTr/liver_1.nii.gz", "# comment", "",
    "Task06_Lung/imagesTr/lung_001.nii.gz 5", "../../etc/passwd"])), max_size=8)


@given(LIST_LINES, st.sampled_from(["MOTS_train.txt", "MOTS_test.txt", "split.json"]), st.binary(max_size=16))
def test_dodnet_list_and_split_files(lines, name, junk):
    from nnunet_transfer.data.convert_mots import read_split_file

    with _folder() as d:
        path = Path(d) / name
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + junk)
        result = _only_ours(read_split_file, path)
    if result is not None:
        assert all(isinstance(e, str) for e in (result.train or []) + list(result.test))


# ------------------------------------------------------------------------------------------ NIfTI headers

def _nifti_bytes() -> bytes:
    import SimpleITK as sitk

    with _folder() as d:
        path = Path(d) / "x.nii"
        image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
        sitk.WriteImage(image, str(path))
        return path.read_bytes()


GOOD_NIFTI = _nifti_bytes()


@given(st.dictionaries(st.integers(0, 351), st.integers(0, 255), max_size=12), st.integers(0, len(GOOD_NIFTI)),
       st.sampled_from([".nii", ".nii.gz"]))
def test_nifti_headers_the_converters_read(patches, cut, ending):
    """Patched header bytes and truncation: the converters' reader returns an image or a problem naming the file."""
    import gzip

    from nnunet_transfer.data.raw_dataset import read_volume

    data = bytearray(GOOD_NIFTI)
    for offset, value in patches.items():
        data[offset] = value
    data = bytes(data[:cut])
    with _folder() as d:
        path = Path(d) / f"case{ending}"
        path.write_bytes(gzip.compress(data, mtime=0) if ending == ".nii.gz" else data)
        for header_only in (False, True):
            image, problem = _only_ours(read_volume, path, header_only=header_only)
            assert (image is None) != (problem is None)
            if problem is not None:
                assert str(path) in problem and "\n" not in problem
