"""KiTS21 sampled references from a clone's ``segmentations/`` instance annotations (official sampler logic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.evaluation.kits import evaluate_kits21, kits_case_metrics
from nnunet_transfer.data.kits_samples import (
    NUMBER_OF_GROUPS,
    annotation_numbers,
    build_segmentation,
    instance_numbers,
    sample_segmentations,
)

SHAPE = (6, 8, 8)


def _mask(z0: int, z1: int, y0: int = 1, y1: int = 7) -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[z0:z1, y0:y1, 1:7] = 1
    return m


def _write(path: Path, array: np.ndarray, spacing=(0.8, 0.8, 2.5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 4.0, 2.0))
    sitk.WriteImage(image, str(path))


def _clone_case(root: Path, number: int = 7) -> Path:
    """kits21/data/case_XXXXX/segmentations/ as the clone has it: 2 kidneys x 3 annotators, 1 tumour x 2
    annotators (so 2 samples per group), no cyst, plus a ureter annotation (not in the label space) and the
    aggregated maps next to it."""
    case = root / "kits21" / "data" / f"case_{number:05d}"
    seg = case / "segmentations"
    for k, z in ((1, 0), (2, 3)):
        for a in (1, 2, 3):
            _write(seg / f"kidney_instance-{k}_annotation-{a}.nii.gz", _mask(z, z + 3, 1, 5 + a // 2))
    for a in (1, 2):
        _write(seg / f"tumor_instance-1_annotation-{a}.nii.gz", _mask(1, 2 + a, 2, 4))
    _write(seg / "ureter_instance-1_annotation-1.nii.gz", _mask(5, 6))
    _write(case / "aggregated_MAJ_seg.nii.gz", _mask(0, 6))
    (case / "raw").mkdir()
    return case


def test_samples_follow_the_official_sampler_order_and_seed(tmp_path):
    case = _clone_case(tmp_path)
    folder = case / "segmentations"
    assert instance_numbers(folder, "kidney") == [1, 2] and instance_numbers(folder, "cyst") == []
    samples = sample_segmentations(case)
    # transcription of sample_segmentations.generate_samples: RandomState(case number); per group the offsets
    # of all kidney, then tumor, then cyst instances; sample i takes annotation (offset + i) % n
    rs = np.random.RandomState(7)
    expected = []
    for group in range(NUMBER_OF_GROUPS):
        kidney = [rs.randint(0, 3), rs.randint(0, 3)]
        tumor = [rs.randint(0, 2)]
        for i in range(2):
            a1, a2 = [1, 2, 3][(kidney[0] + i) % 3], [1, 2, 3][(kidney[1] + i) % 3]
            t = [1, 2][(tumor[0] + i) % 2]
            expected.append((group, f"kidney_i1a{a1}_i2a{a2}_cyst_tumor_i1a{t}.nii.gz"))
    assert [(s.group, s.name) for s in samples] == expected
    assert all(p.name.startswith(("kidney", "tumor")) for s in samples for _, fs in s.files for p in fs)


def test_composition_order_kidney_cyst_tumor_and_geometry(tmp_path):
    case = tmp_path / "case_00003"
    seg = case / "segmentations"
    _write(seg / "kidney_instance-1_annotation-1.nii.gz", _mask(0, 6))
    _write(seg / "cyst_instance-1_annotation-1.nii.gz", _mask(0, 4))
    _write(seg / "tumor_instance-1_annotation-1.nii.gz", _mask(2, 6, 1, 3))
    [sample] = sample_segmentations(case, num_groups=1)
    image = build_segmentation(sample)
    arr = sitk.GetArrayFromImage(image)
    assert arr[0, 4, 4] == 3 and arr[3, 2, 2] == 2 and arr[5, 5, 5] == 1  # tumour over cyst over kidney
    assert image.GetSpacing() == pytest.approx((0.8, 0.8, 2.5)) and image.GetOrigin() == (-10.0, 4.0, 2.0)


def test_instance_prefix_oddity_is_reproduced(tmp_path):
    """The official annotation lookup matches file-name prefixes: instance 1 also sees instance 10's numbers."""
    case = tmp_path / "case_00001"
    seg = case / "segmentations"
    for a in (1, 2, 3):
        _write(seg / f"kidney_instance-1_annotation-{a}.nii.gz", _mask(0, 2))
    for a in (1, 2):
        _write(seg / f"cyst_instance-1_annotation-{a}.nii.gz", _mask(0, 1))
    for a in (1, 2, 3):
        _write(seg / f"cyst_instance-10_annotation-{a}.nii.gz", _mask(3, 4))
    assert annotation_numbers(seg, "cyst", 1) == [1, 2, 3] and annotation_numbers(seg, "cyst", 10) == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match=r"cyst_instance-1_annotation-3\.nii\.gz does not exist.*prefix"):
        sample_segmentations(case, num_groups=5)
    with pytest.raises(FileNotFoundError, match="no kidney/tumor/cyst instance annotations"):
        sample_segmentations(tmp_path / "case_00002")


def test_evaluate_on_a_clone_scores_against_the_sampled_segmentations(tmp_path, capsys):
    case = _clone_case(tmp_path / "clone")
    prediction = _mask(0, 6, 1, 6)
    prediction[1:3, 2:4, 1:7] = 2
    _write(tmp_path / "pred" / "case_00007.nii.gz", prediction)
    results = evaluate_kits21(tmp_path / "pred", tmp_path / "clone")
    assert results["gt_mode"] == "kits21_samples"
    assert "1 cases sampled from their segmentations/ instance annotations" in capsys.readouterr().out
    samples = sample_segmentations(case)
    assert len(samples) == 10
    spacing = sitk.ReadImage(str(tmp_path / "pred" / "case_00007.nii.gz")).GetSpacing()[::-1]  # as stored
    per_sample = [kits_case_metrics(prediction, sitk.GetArrayFromImage(build_segmentation(s)), spacing)
                  for s in samples]
    for hec, metrics in results["per_case"]["case_00007"].items():
        for m, value in metrics.items():
            assert value == pytest.approx(np.mean([r[hec][m] for r in per_sample]), abs=1e-12)
    majority = evaluate_kits21(tmp_path / "pred", tmp_path / "clone", reference="majority")
    assert majority["gt_mode"] == "kits21_majority_vote"
    assert majority["per_case"]["case_00007"] != results["per_case"]["case_00007"]


def test_a_case_the_sampler_cannot_sample_fails_only_when_predicted(tmp_path):
    _clone_case(tmp_path / "clone", number=7)
    bad = tmp_path / "clone" / "kits21" / "data" / "case_00008" / "segmentations"
    for a in (1, 2, 3):
        _write(bad / f"kidney_instance-1_annotation-{a}.nii.gz", _mask(0, 2))
        _write(bad / f"kidney_instance-10_annotation-{a}.nii.gz", _mask(3, 5))
    (bad / "kidney_instance-1_annotation-3.nii.gz").unlink()  # the prefix lookup still selects it
    _write(tmp_path / "pred" / "case_00007.nii.gz", _mask(0, 6))
    assert list(evaluate_kits21(tmp_path / "pred", tmp_path / "clone")["per_case"]) == ["case_00007"]
    _write(tmp_path / "pred" / "case_00008.nii.gz", _mask(0, 6))
    with pytest.raises(FileNotFoundError, match=r"case_00008: .*kidney_instance-1_annotation-3\.nii\.gz does not exist"):
        evaluate_kits21(tmp_path / "pred", tmp_path / "clone")
