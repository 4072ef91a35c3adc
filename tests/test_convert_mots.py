"""MOTS converter on synthetic sources (2 cases per source, tiny volumes), plus the shared raw-dataset machinery.

The converters read ``nnUNet_raw`` from ``os.environ`` at call time, so ``monkeypatch.setenv`` is enough (no reload
of ``nnunetv2.paths``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import SimpleITK as sitk

from nnunet_transfer.data.convert_mots import convert_mots, read_split_file
from nnunet_transfer.data.errors import ConversionError
from nnunet_transfer.data.mots_tasks import DATASET_JSON_KEY, TASKS, nnunet_region_labels
from nnunet_transfer.data.raw_dataset import staged_dataset
from nnunet_transfer.data.synthetic import synth_mots
from support.files import tree_digest

SHAPE = (8, 24, 24)


@pytest.fixture(scope="module")
def mots_source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("mots") / "MOTS"
    synth_mots(src, cases=2, seed=0, shape=SHAPE)
    return src


@pytest.fixture
def broken_source(tmp_path, mots_source) -> Path:
    """A writable copy of the synthetic MOTS tree for tests that damage it."""
    dst = tmp_path / "broken"
    shutil.copytree(mots_source, dst)
    return dst


def _raw_is_empty(raw: Path) -> bool:
    return not raw.exists() or not any(raw.iterdir())


def test_convert_all_tasks_verified_by_nnunet_and_labels_remapped(raw, mots_source):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    before = tree_digest(mots_source)
    out = convert_mots(mots_source, 501)
    assert out == raw / "Dataset501_MOTS"
    verify_dataset_integrity(str(out), num_processes=1)
    assert tree_digest(mots_source) == before, "the converter modified its sources"

    ds = json.loads((out / "dataset.json").read_text())
    labels, order = nnunet_region_labels()
    assert ds["regions_class_order"] == order
    assert {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in labels.items()} == ds["labels"]
    assert ds["channel_names"] == {"0": "CT"} and ds["file_ending"] == ".nii.gz" and ds["numTraining"] == 14
    meta = ds[DATASET_JSON_KEY]
    assert meta["kind"] == "mots" and meta["tasks"] == [t.name for t in TASKS]
    c2t = meta["case_to_task"]
    assert sorted(c2t) == sorted(p.name[:-len(".nii.gz")] for p in (out / "labelsTr").iterdir())
    assert sorted(c2t.values()) == sorted([t.index for t in TASKS] * 2)
    assert meta["source_case"]["liver_000"] == "LiTS/volume-0.nii"
    assert meta["source_case"]["kidney_001"] == "KiTS19/case_00001/imaging.nii.gz"

    # every label voxel is the task's label_map applied to the source label; geometry equals the image's
    for case_id, task_index in c2t.items():
        task = TASKS[task_index]
        src_img = sitk.ReadImage(str(mots_source / meta["source_case"][case_id]))
        src_lab_path = {0: lambda p: p.replace("volume-", "segmentation-"),
                        1: lambda p: p.replace("imaging", "segmentation")}.get(
            task_index, lambda p: p.replace("imagesTr", "labelsTr"))(meta["source_case"][case_id])
        src_lab = sitk.GetArrayFromImage(sitk.ReadImage(str(mots_source / src_lab_path)))
        out_lab_img = sitk.ReadImage(str(out / "labelsTr" / f"{case_id}.nii.gz"))
        out_lab = sitk.GetArrayFromImage(out_lab_img)
        expected = np.zeros_like(src_lab)
        for s, u in task.label_map.items():
            expected[src_lab == s] = u
        np.testing.assert_array_equal(out_lab, expected)
        assert out_lab_img.GetSpacing() == src_img.GetSpacing() and out_lab_img.GetOrigin() == src_img.GetOrigin()
        assert out_lab_img.GetDirection() == src_img.GetDirection()
    kidney = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "kidney_000.nii.gz")))
    src_kidney = sitk.GetArrayFromImage(sitk.ReadImage(str(mots_source / "KiTS19/case_00000/segmentation.nii.gz")))
    assert (src_kidney == 2).any() and (kidney[src_kidney == 2] == 4).all()  # KiTS19 tumour -> unified 4
    # uncompressed LiTS .nii became .nii.gz with the same voxels
    liver = sitk.ReadImage(str(out / "imagesTr" / "liver_000_0000.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(liver),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(mots_source / "LiTS/volume-0.nii"))))


def test_rerun_gives_identical_files_and_leaves_no_staging(raw, mots_source):
    first = tree_digest(convert_mots(mots_source, 502, tasks=["liver", "spleen"]))
    second = tree_digest(convert_mots(mots_source, 502, tasks=["liver", "spleen"], force=True))
    assert first == second and len(first) == 9
    assert [p.name for p in raw.iterdir()] == ["Dataset502_MOTS"]


def test_task_subset_in_parallel(raw, mots_source):
    out = convert_mots(mots_source, 503, name="MOTSsub", tasks=["kidney", "LiTS", "6"], num_workers=2)
    meta = json.loads((out / "dataset.json").read_text())[DATASET_JSON_KEY]
    assert meta["converted_tasks"] == ["liver", "kidney", "spleen"]
    assert sorted(meta["case_to_task"].values()) == [0, 0, 1, 1, 6, 6]
    with pytest.raises(ConversionError, match="unknown MOTS task"):
        convert_mots(mots_source, 503, name="MOTSsub", tasks=["brain"])


def test_split_json_sends_cases_to_imagesTs(raw, mots_source, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": ["liver_000", "KiTS19/case_00001/imaging.nii.gz"]}))
    out = convert_mots(mots_source, 504, split_file=split, tasks=["liver", "kidney"])
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["kidney_001_0000.nii.gz", "liver_000_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == ["kidney_001.nii.gz", "liver_000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["kidney_000.nii.gz", "liver_001.nii.gz"]
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 2 and ds[DATASET_JSON_KEY]["test_cases"] == ["liver_000", "kidney_001"]
    assert len(ds[DATASET_JSON_KEY]["case_to_task"]) == 4


def test_split_dodnet_list_files(raw, mots_source, tmp_path):
    prefix = "0123456_spacing_same"
    line = "{0}/{1} {0}/{2}\n"
    (tmp_path / "MOTS_test.txt").write_text(
        line.format(prefix, "0Liver/imagesTr/liver_1.nii.gz", "0Liver/labelsTr/liver_1.nii.gz")
        + line.format(prefix, "1Kidney/origin/case_00000/imaging.nii.gz", "1Kidney/origin/case_00000/seg.nii.gz")
        + line.format(prefix, "2HepaticVessel/imagesTr/hepaticvessel_002.nii.gz", "2HepaticVessel/labelsTr/x.nii.gz")
        + line.format(prefix, "6Spleen/imagesTr/spleen_1.nii.gz", "6Spleen/labelsTr/spleen_1.nii.gz"))
    (tmp_path / "MOTS_train.txt").write_text(
        "# DoDNet training list\n"
        + line.format(prefix, "0Liver/imagesTr/liver_0.nii.gz", "0Liver/labelsTr/liver_0.nii.gz")
        + line.format(prefix, "1Kidney/origin/case_00001/imaging.nii.gz", "1Kidney/origin/case_00001/seg.nii.gz")
        + line.format(prefix, "2HepaticVessel/imagesTr/hepaticvessel_001.nii.gz", "2HepaticVessel/labelsTr/y.nii.gz"))
    spec = read_split_file(tmp_path / "MOTS_train.txt")
    assert len(spec.train) == 3 and len(spec.test) == 4
    out = convert_mots(mots_source, 505, split_file=tmp_path / "MOTS_test.txt",
                       tasks=["liver", "kidney", "hepatic_vessel"])  # the spleen entry belongs to another task
    meta = json.loads((out / "dataset.json").read_text())[DATASET_JSON_KEY]
    assert meta["test_cases"] == ["liver_001", "kidney_000", "hepatic_vessel_002"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [
        "hepatic_vessel_001.nii.gz", "kidney_001.nii.gz", "liver_000.nii.gz"]

    (tmp_path / "bad_test.txt").write_text(line.format(prefix, "0Liver/imagesTr/liver_7.nii.gz", "l.nii.gz"))
    with pytest.raises(ConversionError, match="liver_7.nii.gz' matches no case"):
        convert_mots(mots_source, 506, split_file=tmp_path / "bad_test.txt", tasks=["liver"])
    assert not (raw / "Dataset506_MOTS").exists()


def _rewrite(path: Path, transform) -> None:
    img = sitk.ReadImage(str(path))
    sitk.WriteImage(transform(img), str(path))


def _with_value(value, pixel=sitk.sitkUInt8):
    def transform(img):
        arr = sitk.GetArrayFromImage(img).astype(np.float64)
        arr[0, 0, 0] = value
        out = sitk.Cast(sitk.GetImageFromArray(arr), pixel)
        out.CopyInformation(img)
        return out
    return transform


def _empty_folders(*folders: Path) -> None:
    for folder in folders:
        for p in folder.iterdir():
            p.unlink()


def _with_spacing(img):
    img.SetSpacing(tuple(s * 1.5 for s in img.GetSpacing()))
    return img


@pytest.mark.parametrize("damage, expected", [
    (lambda s: (s / "LiTS/segmentation-1.nii").unlink(), [r"segmentation-1\.nii\[\.gz\] is missing", "volume-1.nii"]),
    (lambda s: (s / "Task09_Spleen/imagesTr/spleen_2.nii.gz").write_bytes(b"not a nifti"),
     [r"cannot read .*spleen_2\.nii\.gz.*SimpleITK"]),
    (lambda s: _rewrite(s / "Task06_Lung/labelsTr/lung_001.nii.gz", _with_value(2)),
     [r"lung_001\.nii\.gz contains values \[2\].*allowed values are \[0, 1\]"]),
    (lambda s: _rewrite(s / "KiTS19/case_00000/segmentation.nii.gz", _with_spacing),
     [r"spacing mismatch between image .*case_00000/imaging\.nii\.gz and label .*case_00000/segmentation"]),
    (lambda s: _rewrite(s / "Task07_Pancreas/labelsTr/pancreas_001.nii.gz", _with_value(0.5, sitk.sitkFloat32)),
     [r"pancreas_001\.nii\.gz contains non-integer values"]),
    (lambda s: _empty_folders(s / "Task10_Colon/imagesTr", s / "Task10_Colon/labelsTr"),
     [r"no cases found for task colon in .*Task10_Colon: expected imagesTr"]),
    (lambda s: shutil.rmtree(s / "Task06_Lung"), [r"folder .*Task06_Lung does not exist"]),
], ids=["missing-label", "unreadable", "bad-value", "geometry", "non-integer", "empty-folder", "missing-folder"])
def test_bad_input_raises_naming_the_file_and_leaves_nothing(raw, broken_source, damage, expected):
    damage(broken_source)
    with pytest.raises(ConversionError) as info:
        convert_mots(broken_source, 507)
    for pattern in expected:
        assert any(re.search(pattern, p) for p in info.value.problems), (pattern, info.value.problems)
    assert _raw_is_empty(raw), list(raw.iterdir())


def test_all_problems_reported_together_and_old_dataset_kept(raw, broken_source):
    good = tree_digest(convert_mots(broken_source, 508, tasks=["liver", "lung"]))
    (broken_source / "LiTS/segmentation-0.nii").unlink()
    _rewrite(broken_source / "Task06_Lung/labelsTr/lung_002.nii.gz", _with_value(3))
    with pytest.raises(ConversionError) as info:
        convert_mots(broken_source, 508, tasks=["liver", "lung"], force=True)
    assert len(info.value.problems) == 2 and "2 problems found" in str(info.value)
    assert tree_digest(raw / "Dataset508_MOTS") == good
    assert [p.name for p in raw.iterdir()] == ["Dataset508_MOTS"]


def test_duplicate_dataset_id_is_refused(raw, mots_source, tmp_path, monkeypatch):
    (raw / "Dataset509_Other").mkdir(parents=True)
    with pytest.raises(ConversionError, match=r"dataset id 509 is already used by .*Dataset509_Other"):
        convert_mots(mots_source, 509, tasks=["spleen"])
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset509_Other"]
    preprocessed = tmp_path / "pre"
    (preprocessed / "Dataset510_Else").mkdir(parents=True)
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    with pytest.raises(ConversionError, match="Dataset510_Else"):
        convert_mots(mots_source, 510, tasks=["spleen"])


def test_unset_nnunet_raw_names_the_variable_and_the_fix(monkeypatch, mots_source):
    import nnunetv2.paths

    monkeypatch.delenv("nnUNet_raw", raising=False)
    if not hasattr(nnunetv2.paths.nnUNet_raw, "get"):  # older nnunetv2 read the variable at import time
        monkeypatch.setattr(nnunetv2.paths, "nnUNet_raw", None)
    with pytest.raises(ConversionError, match=r"nnUNet_raw is not set.*nnunet-transfer env"):
        convert_mots(mots_source, 511)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, ValueError])
def test_staged_dataset_cleans_up_on_interrupt_and_keeps_old(tmp_path, exc):
    target = tmp_path / "Dataset512_X"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(exc):
        with staged_dataset(target, force=True) as stage:
            assert stage.parent == tmp_path and stage.name.startswith(".")
            (stage / "new.txt").write_text("new")
            raise exc()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset512_X"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with staged_dataset(target, force=True) as stage:
        (stage / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset512_X"]


# ---------------------------------------------------------------------------------------------------------------
# the real downloads' layouts and header defects


def _lits_as_the_zips_extract(mots_source: Path, root: Path) -> Path:
    """LiTS as its two training zips unpack: LiTS/media/nas/01_Datasets/CT/LITS/Training Batch 1|2/, with the
    macOS metadata folder some archivers add."""
    deep = root / "LiTS" / "media" / "nas" / "01_Datasets" / "CT" / "LITS"
    for n, batch in ((0, "Training Batch 1"), (1, "Training Batch 2")):
        (deep / batch).mkdir(parents=True)
        for kind in ("volume", "segmentation"):
            shutil.copyfile(mots_source / "LiTS" / f"{kind}-{n}.nii", deep / batch / f"{kind}-{n}.nii")
    (root / "LiTS" / "__MACOSX" / "Training Batch 1").mkdir(parents=True)
    (root / "LiTS" / "__MACOSX" / "Training Batch 1" / "._volume-0.nii").write_bytes(b"\0\5\26\7")
    return deep


def test_lits_at_any_depth_below_its_folder(raw, mots_source, tmp_path):
    deep = _lits_as_the_zips_extract(mots_source, tmp_path / "src")
    out = convert_mots(tmp_path / "src", 520, tasks=["liver"])
    meta = json.loads((out / "dataset.json").read_text())[DATASET_JSON_KEY]
    assert meta["source_case"] == {
        "liver_000": "LiTS/media/nas/01_Datasets/CT/LITS/Training Batch 1/volume-0.nii",
        "liver_001": "LiTS/media/nas/01_Datasets/CT/LITS/Training Batch 2/volume-1.nii"}
    (deep / "Training Batch 2" / "segmentation-1.nii").unlink()
    with pytest.raises(ConversionError, match=r"segmentation-1\.nii\[\.gz\] is missing.*all folders below it"):
        convert_mots(tmp_path / "src", 521, tasks=["liver"])


def _identity_header(path: Path) -> None:
    """Rewrite a file with spacing 1, origin 0 and identity direction, voxels unchanged (LiTS case 53's label)."""
    img = sitk.ReadImage(str(path))
    out = sitk.GetImageFromArray(sitk.GetArrayFromImage(img))
    sitk.WriteImage(out, str(path))


def test_geometry_mismatch_policies(raw, mots_source, tmp_path, capsys):
    from nnunet_transfer.cli.main import main

    src = tmp_path / "src"
    shutil.copytree(mots_source / "LiTS", src / "LiTS")
    _identity_header(src / "LiTS" / "segmentation-1.nii")
    with pytest.raises(ConversionError, match=r"segmentation-1\.nii.*--geometry-mismatch use-image.*skip"):
        convert_mots(src, 522, tasks=["liver"])
    assert _raw_is_empty(raw)
    assert main(["convert", "mots", str(src), "-d", "522", "--tasks", "liver"]) == 1
    assert "--geometry-mismatch" in capsys.readouterr().err

    out = convert_mots(src, 523, tasks=["liver"], geometry_mismatch="use-image")
    assert "use-image: 1 labels written with their image's geometry: liver_001" in capsys.readouterr().out
    image = sitk.ReadImage(str(src / "LiTS" / "volume-1.nii"))
    label = sitk.ReadImage(str(out / "labelsTr" / "liver_001.nii.gz"))
    assert label.GetSpacing() == image.GetSpacing() and label.GetOrigin() == image.GetOrigin()
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(label) > 0,
        sitk.GetArrayFromImage(sitk.ReadImage(str(src / "LiTS" / "segmentation-1.nii"))) > 0)
    meta = json.loads((out / "dataset.json").read_text())[DATASET_JSON_KEY]
    assert meta["geometry_mismatch"]["label_geometry_from_image"] == ["liver_001"]

    assert main(["convert", "mots", str(src), "-d", "524", "--tasks", "liver", "--geometry-mismatch", "skip"]) == 0
    assert "skip: 1 cases left out: liver_001" in capsys.readouterr().out
    meta = json.loads((raw / "Dataset524_MOTS" / "dataset.json").read_text())[DATASET_JSON_KEY]
    assert list(meta["case_to_task"]) == ["liver_000"] and meta["geometry_mismatch"]["skipped"] == ["liver_001"]

    # use-image cannot repair a size mismatch
    seg = sitk.ReadImage(str(src / "LiTS" / "segmentation-1.nii"))
    sitk.WriteImage(seg[:, :, 1:], str(src / "LiTS" / "segmentation-1.nii"))
    with pytest.raises(ConversionError, match=r"size mismatch.*--geometry-mismatch skip"):
        convert_mots(src, 525, tasks=["liver"], geometry_mismatch="use-image")


def test_identity_affines_convert_with_a_warning_per_case(raw, mots_source, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(mots_source / "LiTS", src / "LiTS")
    for kind in ("volume", "segmentation"):  # LiTS volumes 28-47: identity affine in both files
        _identity_header(src / "LiTS" / f"{kind}-0.nii")
    convert_mots(src, 526, tasks=["liver"])
    printed = capsys.readouterr().out
    assert "WARNING: liver_000: the image header has an identity affine" in printed and "liver_001" not in printed


def test_split_dodnet_bare_id_list_files(raw, mots_source, tmp_path):
    """DoDNet's newer data_list/MOTS/MOTS_{train,test}.txt: bare ids, the task told by the id's prefix."""
    (tmp_path / "MOTS_train.txt").write_text(
        "liver_0\nkidney_00000\nhepaticvessel_001\npancreas_001\ncolon_001\nlung_001\nspleen_1\n")
    (tmp_path / "MOTS_test.txt").write_text("liver_1\nkidney_00001\nhepaticvessel_002\npancreas_002\nspleen_2\n")
    out = convert_mots(mots_source, 527, split_file=tmp_path / "MOTS_train.txt",
                       tasks=["liver", "kidney", "hepatic_vessel"])  # pancreas, colon, lung, spleen: not converted
    meta = json.loads((out / "dataset.json").read_text())[DATASET_JSON_KEY]
    assert meta["test_cases"] == ["liver_001", "kidney_001", "hepatic_vessel_002"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [
        "hepatic_vessel_001.nii.gz", "kidney_000.nii.gz", "liver_000.nii.gz"]
    (tmp_path / "x_test.txt").write_text("hepaticvessel_009\n")
    with pytest.raises(ConversionError, match="'hepaticvessel_009' matches no case.*hepatic_vessel"):
        convert_mots(mots_source, 528, split_file=tmp_path / "x_test.txt", tasks=["hepatic_vessel"])
