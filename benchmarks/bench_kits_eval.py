"""Benchmark: KiTS21 case metrics (nnunet_transfer.evaluation.kits) vs the official algorithm.

The reference, :func:`official_case_metrics`, follows ``kits21/evaluation/metrics.py`` step by step: for each HEC
it builds full-volume boolean masks, computes Dice from voxel counts, and calls DeepMind's
``surface_distance.compute_surface_distances`` (full distance transforms of the bounding box, every surfel sorted)
followed by the area-weighted fraction within the tolerance. Both must agree within 1e-6 on a synthetic case
that looks like a KiTS21 scan (two kidneys, a tumor, a cyst, a prediction with boundary errors).

    python benchmarks/bench_kits_eval.py            # 128 x 256 x 256 voxels
    python benchmarks/bench_kits_eval.py --quick    # 64 x 128 x 128 voxels

``--folder-cases N``: ``evaluate kits21`` (:func:`~nnunet_transfer.evaluation.kits.evaluate_kits21`, what
``nnunet-transfer evaluate kits21 PRED GT -np W`` runs) over a folder of N synthetic cases (the case above with
seeds 0..7, repeated, written as ``case_XXXXX.nii.gz`` predictions and a labels folder of references), with ``--workers``
spawned worker processes vs one process, alternating, results asserted equal. Its progress lines are shown.

    python benchmarks/bench_kits_eval.py --folder-cases 32 --workers 2 --quick
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from nnunet_transfer.evaluation.kits_metrics import HECS, TOLERANCES_MM, kits_case_metrics


def official_case_metrics(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]
) -> dict[str, dict[str, float]]:
    """The official KiTS21 metric, computed the official way (slow, straightforward)."""
    import surface_distance

    results = {}
    for hec, labels in HECS.items():
        mask_pred = np.isin(prediction, labels)
        mask_gt = np.isin(reference, labels)
        gt_empty, pred_empty = not mask_gt.any(), not mask_pred.any()
        if gt_empty and pred_empty:
            dice, sd = 1.0, 1.0
        elif gt_empty or pred_empty:
            dice, sd = 0.0, 0.0
        else:
            dice = 2.0 * np.count_nonzero(mask_pred & mask_gt) / (np.count_nonzero(mask_pred) + np.count_nonzero(mask_gt))
            with warnings.catch_warnings():  # the package uses scipy.ndimage.filters/morphology namespaces
                warnings.simplefilter("ignore", DeprecationWarning)
                dist = surface_distance.compute_surface_distances(mask_gt, mask_pred, tuple(float(s) for s in spacing))
            tol = TOLERANCES_MM[hec]
            overlap_gt = np.sum(dist["surfel_areas_gt"][dist["distances_gt_to_pred"] <= tol])
            overlap_pred = np.sum(dist["surfel_areas_pred"][dist["distances_pred_to_gt"] <= tol])
            sd = (overlap_gt + overlap_pred) / (np.sum(dist["surfel_areas_gt"]) + np.sum(dist["surfel_areas_pred"]))
        results[hec] = {"dice": float(dice), "surface_dice": float(sd)}
    return results


def synthetic_case(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A KiTS-like (prediction, reference) pair: two bumpy kidneys, a tumor and a cyst; the prediction is a
    smoothly perturbed, slightly shifted copy with a missed cyst and a small false-positive tumor."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    extent = np.array(shape) * np.array(spacing)

    def smooth_noise(amplitude: float) -> np.ndarray:
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=[4.0 / s for s in spacing])
        return amplitude * noise / (noise.std() + 1e-12)

    def ellipsoid(center_frac, radii_mm, bumps) -> np.ndarray:
        c = np.array(center_frac) * extent
        r = ((zz - c[0]) / radii_mm[0]) ** 2 + ((yy - c[1]) / radii_mm[1]) ** 2 + ((xx - c[2]) / radii_mm[2]) ** 2
        return r + bumps < 1.0

    scale = min(1.0, extent.min() / 200.0)  # real sizes (mm) when they fit; smaller fields of view shrink them
    radii_kidney = (50 * scale, 28 * scale, 22 * scale)
    reference = np.zeros(shape, dtype=np.uint8)
    prediction = np.zeros(shape, dtype=np.uint8)
    bumps_ref = smooth_noise(0.15)
    bumps_pred = bumps_ref + smooth_noise(0.04)  # boundary errors of a few voxels
    for side in (0.3, 0.7):
        reference[ellipsoid((0.5, 0.55, side), radii_kidney, bumps_ref)] = 1
        prediction[ellipsoid((0.5, 0.56, side + 0.005), radii_kidney, bumps_pred)] = 1
    reference[ellipsoid((0.45, 0.5, 0.3), (12 * scale,) * 3, 0.5 * bumps_ref)] = 2
    prediction[ellipsoid((0.46, 0.5, 0.3), (11 * scale,) * 3, 0.5 * bumps_pred)] = 2
    reference[ellipsoid((0.55, 0.6, 0.7), (6 * scale,) * 3, 0.3 * bumps_ref)] = 3
    prediction[ellipsoid((0.6, 0.5, 0.7), (3 * scale,) * 3, 0.3 * bumps_pred)] = 2
    return prediction, reference


def _best_time(fn, repeats: int) -> tuple[float, dict]:
    best, result = float("inf"), {}
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


#: synthetic (prediction, reference) pairs of the folder benchmark; further cases are copies of them
DISTINCT_CASES = 8


def folder_benchmark(n_cases: int, workers: int, shape: tuple[int, int, int], repeats: int) -> None:
    """``evaluate_kits21`` over ``n_cases`` files: ``workers`` processes vs one, alternating (module docstring)."""
    import SimpleITK as sitk

    from nnunet_transfer.evaluation.kits import evaluate_kits21

    spacing = (3.0, 0.78125, 0.78125)
    root = Path(tempfile.mkdtemp(prefix="bench_kits_folder_"))
    pred_dir, gt_dir = root / "pred", root / "labelsTr"
    pred_dir.mkdir()
    gt_dir.mkdir()
    for seed in range(min(n_cases, DISTINCT_CASES)):  # cases i, i + 8, ... are copies of one synthetic pair
        for array, folder in zip(synthetic_case(shape, spacing, seed=seed), (pred_dir, gt_dir)):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(spacing[::-1])
            sitk.WriteImage(image, str(folder / f"case_{seed:05d}.nii.gz"), True)
            for i in range(seed + DISTINCT_CASES, n_cases, DISTINCT_CASES):
                shutil.copyfile(folder / f"case_{seed:05d}.nii.gz", folder / f"case_{i:05d}.nii.gz")
    times: dict[int, list[float]] = {1: [], workers: []}
    results, progress = {}, {}
    for _ in range(repeats):
        for n in (workers, 1):
            out = io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stdout(out):
                results[n] = evaluate_kits21(pred_dir, gt_dir, num_workers=n)
            times[n].append(time.perf_counter() - start)
            progress[n] = out.getvalue().splitlines()
    shutil.rmtree(root)
    assert results[1]["per_case"] == results[workers]["per_case"], "worker processes changed the results"
    one, many = statistics.median(times[1]), statistics.median(times[workers])
    print(f"evaluate kits21 over {n_cases} cases of {'x'.join(map(str, shape))} voxels (labels-folder reference), "
          f"median of {repeats} alternating repeats; per-case results equal")
    print(f"{'processes':<26}{'time [s]':>10}{'cases/s':>10}")
    for n, t in ((1, one), (workers, many)):
        print(f"{f'{n} (num_workers={n})':<26}{t:>10.2f}{n_cases / t:>10.1f}")
    print(f"speed-up with {workers} worker processes: {one / many:.2f}x; progress lines of the last "
          f"{workers}-worker run ({len(progress[workers])} lines):")
    for line in progress[workers][:3] + ["..."] + progress[workers][-2:]:
        print("    " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64x128x128 instead of 128x256x256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder-cases", type=int, default=0,
                        help="time evaluate_kits21 over a folder of this many cases instead (see above)")
    parser.add_argument("--workers", type=int, default=2, help="--folder-cases: worker processes against one")
    args = parser.parse_args()

    shape = (64, 128, 128) if args.quick else (128, 256, 256)
    if args.folder_cases:
        folder_benchmark(args.folder_cases, args.workers, shape, args.repeats)
        return
    cases = {
        "anisotropic 3.0x0.78x0.78 mm": (3.0, 0.78125, 0.78125),
        "isotropic 0.8 mm": (0.8, 0.8, 0.8),
    }
    print(f"KiTS21 case metrics, volume {shape[0]}x{shape[1]}x{shape[2]}, best of {args.repeats}")
    print(f"{'spacing':<30} {'official (s)':>12} {'ours (s)':>10} {'speed-up':>9} {'max |diff|':>11}")
    for name, spacing in cases.items():
        prediction, reference = synthetic_case(shape, spacing, seed=0)
        t_official, official = _best_time(lambda: official_case_metrics(prediction, reference, spacing), args.repeats)
        t_ours, ours = _best_time(lambda: kits_case_metrics(prediction, reference, spacing), args.repeats)
        diff = max(abs(ours[h][m] - official[h][m]) for h in HECS for m in ("dice", "surface_dice"))
        assert diff <= 1e-6, f"metrics disagree by {diff}: ours {ours} vs official {official}"
        print(f"{name:<30} {t_official:>12.3f} {t_ours:>10.3f} {t_official / t_ours:>8.1f}x {diff:>11.1e}")
        print("   " + "  ".join(f"{h}: Dice {ours[h]['dice']:.4f} SD {ours[h]['surface_dice']:.4f}" for h in HECS))


if __name__ == "__main__":
    main()
