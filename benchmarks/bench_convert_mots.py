"""``convert mots`` on the five MSD tasks of MOTS vs nnU-Net's own MSD converter on the same sources, in one run.

Sources: the synthetic MSD-layout folders of ``synth mots`` (``Task06_Lung``, ``Task07_Pancreas``,
``Task08_HepaticVessel``, ``Task09_Spleen``, ``Task10_Colon``: ``imagesTr``/``labelsTr``/``imagesTs`` and
``dataset.json``, int16 CT images, uint8 labels, gzip-compressed NIfTI as in the real release).

* nnU-Net: ``convert_msd_dataset`` (what ``nnUNetv2_convert_MSD_dataset -i TaskXX_Name -overwrite_id ID -np N``
  runs) once per MSD task, since it converts one MSD task at a time. It reads every image (to split 4D ones) and
  copies it, and copies the labels unread; it checks nothing.
* ours: one ``convert_mots(SOURCE, ID, tasks=[the five MSD tasks], num_workers=N)`` (what ``nnunet-transfer
  convert mots SOURCE -d ID --tasks ... -np N`` runs), integrity checks included: complete gzip streams, finite
  voxels, 3D volumes, image/label geometry, allowed label values; labels remapped into the unified label space
  and written with the image's header.

Both write into the same ``nnUNet_raw``; their outputs are removed after every repetition (nnU-Net refuses a
dataset id that is taken). Repetitions alternate between the two, so machine load hits both alike; the figure is
the ratio of median times (ours / nnU-Net); the goal is at most 1.5x. ``nnUNetv2_convert_MSD_dataset`` also
converts the unlabelled ``imagesTs`` images (one per task here), which ``convert mots`` leaves out. Its converter
starts a pool of spawned worker processes per task, a fixed cost that small synthetic tasks exaggerate; the work
of its workers on the same labelled cases alone (``split_4d_nifti`` of ``imagesTr`` and the label copies, in
this process) is timed too, as the stricter comparison.

    python benchmarks/bench_convert_mots.py --quick       # 2 cases per task, 32x128x128
    python benchmarks/bench_convert_mots.py               # 4 cases per task, 48x256x256
    python benchmarks/bench_convert_mots.py --workers 2   # -np 2 for both
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

MSD_TASK_FOLDERS = ("Task08_HepaticVessel", "Task07_Pancreas", "Task10_Colon", "Task06_Lung", "Task09_Spleen")
OURS_ID, NNUNET_FIRST_ID = 990, 991


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 cases per task of 32x128x128")
    parser.add_argument("--cases", type=int, default=None, help="cases per task (default 4, quick 2)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="volume z y x (default 48 256 256)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of both converters (-np)")
    parser.add_argument("--workspace", default=None, help="reuse a workspace (keeps the synthetic sources)")
    args = parser.parse_args(argv)
    cases = args.cases or (2 if args.quick else 4)
    shape = tuple(args.shape or ((32, 128, 128) if args.quick else (48, 256, 256)))
    root = Path(args.workspace or tempfile.mkdtemp(prefix="bench_convert_")).resolve()
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # before nnunetv2.paths is imported
        os.environ[var] = str(root / var)
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)

    from nnunetv2.dataset_conversion.convert_MSD_dataset import convert_msd_dataset, split_4d_nifti

    from nnunet_transfer.data.convert_mots import convert_mots
    from nnunet_transfer.data.synthetic import MARKER_NAME, synth_mots

    source = root / "mots_sources"
    marker = source / MARKER_NAME
    if not marker.is_file() or json.loads(marker.read_text())["cases"] != cases \
            or tuple(json.loads(marker.read_text())["shape"]) != shape:
        synth_mots(source, cases=cases, seed=0, shape=shape)
    task_names = [folder.split("_", 1)[1] for folder in MSD_TASK_FOLDERS]
    raw = Path(os.environ["nnUNet_raw"])

    def nnunet():
        for i, folder in enumerate(MSD_TASK_FOLDERS):
            convert_msd_dataset(str(source / folder), overwrite_target_id=NNUNET_FIRST_ID + i,
                                num_processes=args.workers)

    def nnunet_work():  # its workers' work on the labelled cases, in this process (no pool start-ups, no imagesTs)
        for i, folder in enumerate(MSD_TASK_FOLDERS):
            target = raw / f"Work{i}"
            for sub in ("imagesTr", "labelsTr"):
                (target / sub).mkdir(parents=True)
            for image in sorted((source / folder / "imagesTr").glob("*.nii.gz")):
                if not image.name.startswith((".", "_")):
                    split_4d_nifti(str(image), str(target / "imagesTr"))
            for label in sorted((source / folder / "labelsTr").glob("*.nii.gz")):
                if not label.name.startswith((".", "_")):
                    shutil.copy(label, target / "labelsTr" / label.name)

    def ours():
        convert_mots(source, OURS_ID, name="BenchMOTS", tasks=list(MSD_TASK_FOLDERS), num_workers=args.workers)

    def clean():
        for entry in raw.iterdir():
            shutil.rmtree(entry)

    clean()
    times = {"nnunet": [], "nnunet_work": [], "ours": []}
    for _ in range(args.repeats):
        for name, fn in (("nnunet", nnunet), ("nnunet_work", nnunet_work), ("ours", ours)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        written = sorted(p.name for p in raw.iterdir() if not p.name.startswith("Work"))
        clean()
    images = sum(len(list((source / f / "imagesTr").glob("*.nii.gz"))) for f in MSD_TASK_FOLDERS)
    size_mb = sum(p.stat().st_size for f in MSD_TASK_FOLDERS for p in (source / f).rglob("*.nii.gz")) / 1e6
    t_nn, t_work, t_ours = (statistics.median(times[k]) for k in ("nnunet", "nnunet_work", "ours"))
    print(f"MSD tasks {', '.join(task_names)}: {images} labelled cases of {'x'.join(map(str, shape))} voxels "
          f"(+{len(MSD_TASK_FOLDERS)} imagesTs), {size_mb:.1f} MB of .nii.gz; {args.workers} worker process(es) "
          f"each; median of {args.repeats} alternating repetitions; datasets written: {', '.join(written)}")
    print(f"{'converter':<58}{'time [s]':>10}")
    print(f"{'nnUNetv2_convert_MSD_dataset, once per task':<58}{t_nn:>10.2f}")
    print(f"{'  its work on the same cases (no pool, no imagesTs)':<58}{t_work:>10.2f}")
    print(f"{'nnunet-transfer convert mots --tasks (5 MSD tasks)':<58}{t_ours:>10.2f}")
    print(f"ratio ours / nnU-Net: {t_ours / t_nn:.2f}x (goal <= 1.5x); ours / its per-case work: "
          f"{t_ours / t_work:.2f}x; all times [s]: "
          + "; ".join(f"{k} " + " ".join(f"{t:.2f}" for t in v) for k, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
