"""Tests of the KiTS21 evaluation (Dice and Surface Dice per HEC, folder evaluation in both reference layouts).

Surface Dice values are checked against hand-derived formulas (cubes shifted along one axis), against an
independent brute-force implementation (explicit neighbour codes + all-pairs distances) and against the official
algorithm built on DeepMind's ``surface_distance.compute_surface_distances`` (from the benchmark script).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import cdist
from surface_distance import lookup_tables

from nnunet_transfer.evaluation.kits import evaluate_kits21, format_table
from nnunet_transfer.evaluation.kits_metrics import HECS, TOLERANCES_MM, kits_case_metrics

REPO = Path(__file__).resolve().parents[1]


def _load_official_reference():
    spec = importlib.util.spec_from_file_location("bench_kits_eval", REPO / "benchmarks" / "bench_kits_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.official_case_metrics


official_case_metrics = _load_official_reference()

# surfel areas (1 mm isotropic) of DeepMind's table: flat face point, cube edge point, cube corner point
A_FACE, A_EDGE, A_CORNER = 1.0, math.sqrt(2) / 2, math.sqrt(3) / 8


def cube(shape, start, size, label=1) -> np.ndarray:
    arr = np.zeros(shape, dtype=np.uint8)
    arr[tuple(slice(s, s + size) for s in start)] = label
    return arr


def cube_area(n: int) -> float:
    """Surfel area of an n^3 voxel cube at 1 mm: 6 faces, 12 edges, 8 corners of the corner-point grid."""
    return 6 * (n - 1) ** 2 * A_FACE + 12 * (n - 1) * A_EDGE + 8 * A_CORNER


def ring(n: int) -> float:
    """Area of one lateral ring of border points at an interior level of an n^3 cube."""
    return 4 * (n - 1) * A_FACE + 4 * A_EDGE


def shifted_cube_sd_exact_only(n: int, k: int) -> float:
    """SD of an n-cube vs the same cube shifted by k voxels along axis 0 when only coincident surfels count
    (spacing > tolerance): the shared lateral rings at levels k..n-1 and the top edge ring at level n.
    By mirror symmetry the prediction's overlap equals the reference's."""
    overlap = (n - k) * ring(n) + 4 * (n - 1) * A_EDGE + 4 * A_CORNER
    return overlap / cube_area(n)


def shifted_cube_sd_1mm(n: int, k: int) -> float:
    """Same at 1 mm with a tolerance in [1, sqrt 2): surfels 0 or 1 grid step away count. Adds the ring at
    level k-1 and the band of top-face points one step from the side faces (needs k >= 2 and n - k >= 2)."""
    overlap = (n - k + 1) * ring(n) + 4 * (n - 1) * A_EDGE + 4 * A_CORNER + 4 * (n - 2) * A_FACE
    return overlap / cube_area(n)


def brute_force_surface_dice(pred: np.ndarray, ref: np.ndarray, spacing, tol: float) -> float:
    """Independent Surface Dice: neighbour codes by explicit shifts, all-pairs corner distances in mm."""
    kernel = lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL
    table = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)

    def surfels(mask):
        padded = np.pad(mask.astype(np.int64), 1)
        shape = tuple(s - 1 for s in padded.shape)  # corner points between voxels, incl. outer ones
        codes = np.zeros(shape, dtype=np.int64)
        for i in (0, 1):
            for j in (0, 1):
                for k in (0, 1):
                    codes += kernel[i, j, k] * padded[i : i + shape[0], j : j + shape[1], k : k + shape[2]]
        points = np.argwhere((codes != 0) & (codes != 255))
        return points * np.asarray(spacing), table[codes[tuple(points.T)]]

    pts_p, area_p = surfels(pred)
    pts_r, area_r = surfels(ref)
    d = cdist(pts_r, pts_p)
    near_r = d.min(axis=1) <= tol
    near_p = d.min(axis=0) <= tol
    return (area_r[near_r].sum() + area_p[near_p].sum()) / (area_r.sum() + area_p.sum())


def random_case(rng: np.random.Generator, shape=(14, 16, 15), base: list | None = None) -> np.ndarray:
    """A kidney blob with tumor and cyst blobs inside (smoothed noise, thresholded). Cases made from the same
    ``base`` fields are perturbed versions of each other, like a prediction and its reference."""

    def field():
        f = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
        return f / f.std()

    base = base if base is not None else [field() for _ in range(3)]
    kidney, tumor, cyst = (b + 0.4 * field() for b in base)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[kidney > -0.2] = 1
    labels[(tumor > 0.7) & (labels == 1)] = 2
    labels[(cyst > 1.0) & (labels == 1)] = 3
    return labels


def random_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    base = [ndimage.gaussian_filter(rng.standard_normal((14, 16, 15)), 2.0) for _ in range(3)]
    base = [b / b.std() for b in base]
    return random_case(rng, base=base), random_case(rng, base=base)


# ---------------------------------------------------------------------------------------------------------------
# metric on arrays
# ---------------------------------------------------------------------------------------------------------------


def test_hec_definitions_and_tolerances_are_the_official_ones():
    assert HECS == {"kidney_and_mass": (1, 2, 3), "mass": (2, 3), "tumor": (2,)}
    assert TOLERANCES_MM == {
        "kidney_and_mass": 1.0330772532390826,
        "mass": 1.1328796488598762,
        "tumor": 1.1498198361434828,
    }


def test_identical_label_maps_score_one():
    labels = random_case(np.random.default_rng(0))
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    result = kits_case_metrics(labels, labels.copy(), (1.0, 0.8, 2.5))
    assert list(result) == list(HECS)
    for hec in HECS:
        assert result[hec] == {"dice": 1.0, "surface_dice": 1.0}


def test_dice_per_hec_with_known_overlaps():
    shape = (20, 20, 20)
    ref = cube(shape, (2, 2, 2), 10, label=1)  # kidney 1000 voxels
    ref[4:8, 4:8, 4:8] = 2  # tumor 64
    ref[10:12, 10:12, 10:12] = 3  # cyst 8
    pred = cube(shape, (2, 2, 2), 10, label=1)
    pred[4:8, 4:8, 6:10] = 2  # tumor shifted by 2 -> overlap 32
    # cyst missed (kidney there)
    result = kits_case_metrics(pred, ref, (1.0, 1.0, 1.0))
    assert result["kidney_and_mass"]["dice"] == 1.0
    assert result["tumor"]["dice"] == pytest.approx(2 * 32 / (64 + 64))
    assert result["mass"]["dice"] == pytest.approx(2 * 32 / (64 + 72))


@pytest.mark.parametrize("n,k", [(8, 3), (9, 2), (10, 5)])
def test_surface_dice_of_shifted_cube_at_1mm_matches_hand_value(n, k):
    shape = (n + k + 4, n + 4, n + 4)
    ref = cube(shape, (2, 2, 2), n, label=2)
    pred = cube(shape, (2 + k, 2, 2), n, label=2)
    result = kits_case_metrics(pred, ref, (1.0, 1.0, 1.0))
    for hec in HECS:  # all tolerances lie in [1, sqrt 2): the same hand value for every HEC
        assert result[hec]["dice"] == pytest.approx((n - k) / n)
        assert result[hec]["surface_dice"] == pytest.approx(shifted_cube_sd_1mm(n, k), abs=1e-12)


@pytest.mark.parametrize("n,k", [(6, 1), (8, 3)])
def test_surface_dice_of_shifted_cube_with_spacing_above_tolerance(n, k):
    shape = (n + k + 2, n + 2, n + 2)
    ref = cube(shape, (1, 1, 1), n)
    pred = cube(shape, (1 + k, 1, 1), n)
    result = kits_case_metrics(pred, ref, (2.0, 2.0, 2.0))
    assert result["kidney_and_mass"]["surface_dice"] == pytest.approx(shifted_cube_sd_exact_only(n, k), abs=1e-12)


def test_anisotropic_spacing_is_applied_per_array_axis():
    shape = (12, 12, 12)
    ref = cube(shape, (2, 2, 2), 7)
    spacing = (2.0, 0.5, 0.5)  # axis 0 coarse: one voxel is beyond every tolerance; axes 1, 2 fine
    coarse_shift = kits_case_metrics(cube(shape, (3, 2, 2), 7), ref, spacing)["kidney_and_mass"]["surface_dice"]
    fine_shift = kits_case_metrics(cube(shape, (2, 2, 3), 7), ref, spacing)["kidney_and_mass"]["surface_dice"]
    assert fine_shift == 1.0  # every surfel within 0.5 mm of the other surface
    assert coarse_shift < 0.9
    # the same coarse shift with the spacing given in the wrong (reversed) order scores differently
    reversed_order = kits_case_metrics(cube(shape, (3, 2, 2), 7), ref, spacing[::-1])["kidney_and_mass"]
    assert reversed_order["surface_dice"] == 1.0


@pytest.mark.parametrize(
    "spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.8), (0.45, 0.6, 1.7), (0.5, 0.5, 0.5)]
)
def test_agrees_with_brute_force_and_official_algorithm_on_random_blobs(spacing):
    rng = np.random.default_rng(int(sum(spacing) * 100))
    for _ in range(3):
        pred, ref = random_pair(rng)
        ours = kits_case_metrics(pred, ref, spacing)
        official = official_case_metrics(pred, ref, spacing)
        for hec, labels in HECS.items():
            mask_p, mask_r = np.isin(pred, labels), np.isin(ref, labels)
            assert ours[hec]["dice"] == pytest.approx(official[hec]["dice"], abs=1e-12)
            assert ours[hec]["surface_dice"] == pytest.approx(official[hec]["surface_dice"], abs=1e-9)
            if mask_p.any() and mask_r.any():
                brute = brute_force_surface_dice(mask_p, mask_r, spacing, TOLERANCES_MM[hec])
                assert ours[hec]["surface_dice"] == pytest.approx(brute, abs=1e-9)
                assert 0.0 < ours[hec]["surface_dice"] < 1.0


def test_objects_touching_the_volume_border():
    ref = np.zeros((6, 7, 8), dtype=np.uint8)
    ref[:3] = 1
    pred = np.zeros_like(ref)
    pred[:, :, :4] = 1
    ours = kits_case_metrics(pred, ref, (1.2, 0.9, 0.7))
    official = official_case_metrics(pred, ref, (1.2, 0.9, 0.7))
    assert ours["kidney_and_mass"]["surface_dice"] == pytest.approx(official["kidney_and_mass"]["surface_dice"])


def test_empty_mask_rules_per_hec():
    shape = (10, 10, 10)
    kidney = cube(shape, (2, 2, 2), 6, label=1)
    spacing = (1.0, 1.0, 1.0)

    both_empty = kits_case_metrics(np.zeros(shape, np.uint8), np.zeros(shape, np.uint8), spacing)
    assert all(both_empty[h] == {"dice": 1.0, "surface_dice": 1.0} for h in HECS)

    kidney_only = kits_case_metrics(kidney, kidney, spacing)  # no mass in either: mass and tumor are 1
    assert kidney_only["mass"] == kidney_only["tumor"] == {"dice": 1.0, "surface_dice": 1.0}

    ref_tumor = kidney.copy()
    ref_tumor[4:6, 4:6, 4:6] = 2
    missed = kits_case_metrics(kidney, ref_tumor, spacing)  # tumor only in the reference
    assert missed["mass"] == missed["tumor"] == {"dice": 0.0, "surface_dice": 0.0}
    assert missed["kidney_and_mass"] == {"dice": 1.0, "surface_dice": 1.0}

    false_positive = kits_case_metrics(ref_tumor, kidney, spacing)  # tumor only in the prediction
    assert false_positive["mass"] == false_positive["tumor"] == {"dice": 0.0, "surface_dice": 0.0}

    cyst = kidney.copy()
    cyst[4:6, 4:6, 4:6] = 3
    cyst_only = kits_case_metrics(cyst, cyst, spacing)  # mass present, no tumor anywhere
    assert cyst_only["mass"] == {"dice": 1.0, "surface_dice": 1.0}
    assert cyst_only["tumor"] == {"dice": 1.0, "surface_dice": 1.0}

    nothing_predicted = kits_case_metrics(np.zeros(shape, np.uint8), ref_tumor, spacing)
    assert all(nothing_predicted[h] == {"dice": 0.0, "surface_dice": 0.0} for h in HECS)


def test_invalid_inputs_are_rejected():
    labels = np.zeros((4, 4, 4), dtype=np.uint8)
    bad = labels.copy()
    bad[0, 0, 0] = 5
    with pytest.raises(ValueError, match=r"prediction: unexpected label values \[5\]"):
        kits_case_metrics(bad, labels, (1, 1, 1))
    with pytest.raises(ValueError, match="reference: unexpected label values"):
        kits_case_metrics(labels, np.full((4, 4, 4), -1, np.int16), (1, 1, 1))
    with pytest.raises(ValueError, match="unexpected label values"):
        kits_case_metrics(labels.astype(float) + 0.5, labels, (1, 1, 1))
    with pytest.raises(ValueError, match="differs from reference shape"):
        kits_case_metrics(labels, np.zeros((4, 4, 5), np.uint8), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        kits_case_metrics(labels, labels, (1, 1))
    with pytest.raises(ValueError, match="3D"):
        kits_case_metrics(labels[0], labels[0], (1, 1, 1))


# ---------------------------------------------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------------------------------------------


def write_labels(path: Path, labels: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    sitk.WriteImage(image, str(path))
    return path


def test_labels_folder_mode_json_csv_and_spacing_order(tmp_path, capsys):
    spacing_zyx = (2.0, 0.5, 0.5)
    ref = cube((12, 12, 12), (2, 2, 2), 7)
    ref[4:7, 4:7, 4:7] = 2
    pred_a = cube((12, 12, 12), (3, 2, 2), 7)  # shifted along the coarse axis
    pred_b = ref.copy()
    for case_id, pred in (("case_00001", pred_a), ("case_00000", pred_b)):
        write_labels(tmp_path / "gt" / f"{case_id}.nii.gz", ref, spacing_zyx)
        write_labels(tmp_path / "pred" / f"{case_id}.nii.gz", pred, spacing_zyx)
    (tmp_path / "pred" / "summary.json").write_text("{}")  # nnU-Net leaves other files next to predictions

    results = evaluate_kits21(
        tmp_path / "pred", tmp_path / "gt", tmp_path / "out" / "kits.json", tmp_path / "out" / "kits.csv"
    )
    assert results["gt_mode"] == "labels_folder"
    assert "labels_folder" in capsys.readouterr().out
    assert list(results["per_case"]) == ["case_00000", "case_00001"]
    expected_a = kits_case_metrics(pred_a, ref, spacing_zyx)
    assert results["per_case"]["case_00001"] == expected_a
    assert expected_a != kits_case_metrics(pred_a, ref, spacing_zyx[::-1])  # the axis order matters here
    assert results["per_case"]["case_00000"] == {h: {"dice": 1.0, "surface_dice": 1.0} for h in HECS}
    for hec in HECS:
        for metric in ("dice", "surface_dice"):
            assert results["mean"][hec][metric] == pytest.approx((1.0 + expected_a[hec][metric]) / 2)

    written = json.loads((tmp_path / "out" / "kits.json").read_text())
    assert written == results
    assert list(written["per_case"]["case_00001"]) == list(HECS)
    assert list(written["per_case"]["case_00001"]["mass"]) == ["dice", "surface_dice"]

    with open(tmp_path / "out" / "kits.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["case_id"] + [f"{h}_{m}" for h in HECS for m in ("dice", "surface_dice")]
    assert [r[0] for r in rows[1:]] == ["case_00000", "case_00001"]
    assert float(rows[2][3]) == expected_a["mass"]["dice"]

    table = format_table(results)
    assert "2 cases" in table and "labels_folder" in table
    for hec in HECS:
        assert f"{results['mean'][hec]['dice']:.4f}" in table


def _make_official_layout(root: Path, n: int = 8) -> dict[str, float]:
    """kits21/data/case_00000 with two sample groups; returns the hand-derived expected scores."""
    shape = (n + 10, n + 4, n + 4)
    case = root / "kits21" / "data" / "case_00000"
    (case / "segmentations").mkdir(parents=True)  # raw instance annotations live here; never a reference
    write_labels(case / "imaging.nii.gz", np.zeros(shape, np.uint8))
    write_labels(case / "aggregated_MAJ_seg.nii.gz", cube(shape, (2, 2, 2), n, label=3))  # would change results
    samples = case / "segmentation_samples"
    write_labels(samples / "group_0" / "kidney_i1a1_cyst_tumor.nii.gz", cube(shape, (2, 2, 2), n))
    write_labels(samples / "group_0" / "kidney_i1a2_cyst_tumor.nii.gz", cube(shape, (5, 2, 2), n))
    write_labels(samples / "group_1" / "kidney_i1a3_cyst_tumor.nii.gz", cube(shape, (4, 2, 2), n))
    (samples / "group_1" / "notes.txt").write_text("not a sample")
    write_labels(root / "pred" / "case_00000.nii.gz", cube(shape, (2, 2, 2), n))
    # prediction vs samples: identical, shifted by 3, shifted by 2 voxels (1 mm)
    return {
        "dice": (1.0 + (n - 3) / n + (n - 2) / n) / 3,
        "surface_dice": (1.0 + shifted_cube_sd_1mm(n, 3) + shifted_cube_sd_1mm(n, 2)) / 3,
    }


@pytest.mark.parametrize("gt_level", ["kits21", "kits21/data"])
def test_official_layout_uses_the_mean_over_sampled_annotations(tmp_path, gt_level, capsys):
    expected = _make_official_layout(tmp_path)
    results = evaluate_kits21(tmp_path / "pred", tmp_path / gt_level)
    assert results["gt_mode"] == "kits21_samples"
    assert "kits21_samples" in capsys.readouterr().out
    case = results["per_case"]["case_00000"]
    assert case["kidney_and_mass"]["dice"] == pytest.approx(expected["dice"], abs=1e-12)
    assert case["kidney_and_mass"]["surface_dice"] == pytest.approx(expected["surface_dice"], abs=1e-12)
    assert case["mass"] == case["tumor"] == {"dice": 1.0, "surface_dice": 1.0}


def test_official_layout_without_samples_uses_the_majority_vote(tmp_path):
    _make_official_layout(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "kits21" / "data" / "case_00000" / "segmentation_samples")
    results = evaluate_kits21(tmp_path / "pred", tmp_path / "kits21")
    assert results["gt_mode"] == "kits21_majority_vote"
    case = results["per_case"]["case_00000"]  # the majority vote is a cyst where the prediction has kidney
    assert case["kidney_and_mass"] == {"dice": 1.0, "surface_dice": 1.0}
    assert case["mass"] == {"dice": 0.0, "surface_dice": 0.0}


def test_official_layout_case_without_samples_is_an_error_only_when_predicted(tmp_path):
    _make_official_layout(tmp_path)
    other = tmp_path / "kits21" / "data" / "case_00001"
    write_labels(other / "aggregated_MAJ_seg.nii.gz", np.zeros((4, 4, 4), np.uint8))
    results = evaluate_kits21(tmp_path / "pred", tmp_path / "kits21")  # case_00001 is not predicted: fine
    assert results["gt_mode"] == "kits21_samples" and list(results["per_case"]) == ["case_00000"]
    write_labels(tmp_path / "pred" / "case_00001.nii.gz", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"case_00001: neither segmentations/.*--use-maj-voting-as-gt"):
        evaluate_kits21(tmp_path / "pred", tmp_path / "kits21")
    majority = evaluate_kits21(tmp_path / "pred", tmp_path / "kits21", reference="majority")
    assert majority["gt_mode"] == "kits21_majority_vote" and majority["num_cases"] == 2


def test_subset_of_predictions_is_scored_and_missing_cases_listed(tmp_path, capsys):
    from nnunet_transfer.cli.main import main

    labels = cube((6, 6, 6), (1, 1, 1), 3)
    for case_id in ("case_00000", "case_00001", "case_00002"):
        write_labels(tmp_path / "gt" / f"{case_id}.nii.gz", labels)
    write_labels(tmp_path / "pred" / "case_00001.nii.gz", labels)
    results = evaluate_kits21(tmp_path / "pred", tmp_path / "gt")
    assert list(results["per_case"]) == ["case_00001"] and results["num_cases"] == 1
    assert results["num_reference_cases"] == 3
    assert results["missing_predictions"] == ["case_00000", "case_00002"]
    assert "2 reference cases have no prediction" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match=r"2 of 3 reference cases.*case_00000, case_00002.*--require-all"):
        evaluate_kits21(tmp_path / "pred", tmp_path / "gt", require_all=True)
    assert main(["evaluate", "kits21", str(tmp_path / "pred"), str(tmp_path / "gt"), "--require-all"]) == 1
    assert "have no prediction" in capsys.readouterr().err
    assert main(["evaluate", "kits21", str(tmp_path / "pred"), str(tmp_path / "gt")]) == 0
    assert json.loads((tmp_path / "pred" / "kits_metrics.json").read_text())["num_cases"] == 1

    write_labels(tmp_path / "pred" / "case_00009.nii.gz", labels)
    with pytest.raises(FileNotFoundError, match=r"have no reference.*case_00009"):
        evaluate_kits21(tmp_path / "pred", tmp_path / "gt")


def test_geometry_size_mismatch_fails_other_differences_warn_and_use_the_prediction_spacing(tmp_path, capsys):
    labels = cube((6, 6, 6), (1, 1, 1), 3)
    shifted = cube((6, 6, 6), (2, 1, 1), 3)
    write_labels(tmp_path / "gt" / "case_00000.nii.gz", labels, (1.0, 1.0, 1.0))
    pred_path = write_labels(tmp_path / "pred" / "case_00000.nii.gz", labels[:, :, :5])
    with pytest.raises(ValueError, match=r"case_00000\.nii\.gz \(size.*reference .*gt.*case_00000\.nii\.gz"):
        evaluate_kits21(tmp_path / "pred", tmp_path / "gt")

    write_labels(pred_path, shifted, (2.5, 1.0, 1.0))  # spacing (z, y, x) differs from the reference's
    results = evaluate_kits21(tmp_path / "pred", tmp_path / "gt")
    assert results["per_case"]["case_00000"] == kits_case_metrics(shifted, labels, (2.5, 1.0, 1.0))
    assert results["per_case"]["case_00000"] != kits_case_metrics(shifted, labels, (1.0, 1.0, 1.0))
    [warning] = results["warnings"]
    assert warning.startswith("case_00000: prediction spacing (1.0, 1.0, 2.5) differs") and "official" in warning
    assert "WARNING: case_00000: prediction spacing" in capsys.readouterr().out

    bad = labels.copy()
    bad[0, 0, 0] = 7
    write_labels(pred_path, bad)
    with pytest.raises(ValueError, match=r"pred.*case_00000\.nii\.gz: unexpected label values \[7\]"):
        evaluate_kits21(tmp_path / "pred", tmp_path / "gt")


def test_worker_processes_give_the_same_results(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(3):
        pred, ref = random_pair(rng)
        write_labels(tmp_path / "gt" / f"case_{i:05d}.nii.gz", ref, (1.5, 0.8, 0.8))
        write_labels(tmp_path / "pred" / f"case_{i:05d}.nii.gz", pred, (1.5, 0.8, 0.8))
    serial = evaluate_kits21(tmp_path / "pred", tmp_path / "gt", num_workers=1)
    parallel = evaluate_kits21(tmp_path / "pred", tmp_path / "gt", num_workers=2)
    assert parallel == serial
    assert list(parallel["per_case"]) == ["case_00000", "case_00001", "case_00002"]


def test_progress_is_about_twenty_lines_ending_with_all_cases(tmp_path, capsys):
    rng = np.random.default_rng(4)
    pred, ref = random_pair(rng)
    for i in range(45):
        write_labels(tmp_path / "gt" / f"case_{i:05d}.nii.gz", ref, (1.5, 0.8, 0.8))
        write_labels(tmp_path / "pred" / f"case_{i:05d}.nii.gz", pred, (1.5, 0.8, 0.8))
    evaluate_kits21(tmp_path / "pred", tmp_path / "gt")
    progress = [line for line in capsys.readouterr().out.splitlines() if "cases done" in line]
    assert 10 <= len(progress) <= 21
    assert progress[0].startswith("KiTS21 evaluation: 3/45 cases done (case_00002), ") and "s left" in progress[0]
    assert progress[-1].startswith("KiTS21 evaluation: 45/45 cases done (case_00044), ")
    assert "left" not in progress[-1]
