"""``nnunet-transfer`` commands. Data: synthetic sources in the official layouts, converters to nnU-Net raw datasets,
point annotations to labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_transfer.cli.arg_types import dataset_id, finite_float, percentile, positive_float, positive_int, seed

#: the names of ``data.synthetic.KIDNEY_LESION_PROFILES``, for ``--kidney-lesions`` (here, so that building the parser
#: does not import the generators)
KIDNEY_LESION_CHOICES = ("standard", "large", "bright")


def _cmd_synth(args: argparse.Namespace) -> int:
    from nnunet_transfer.data import synthetic

    sizes = {"cases": args.cases} if args.cases is not None else {}
    if args.kind == "mots":
        synthetic.synth_mots(args.out, seed=args.seed, shape=tuple(args.shape) if args.shape else None,
                             source_cases=_source_cases(args.source_cases), kidney_lesions=args.kidney_lesions,
                             **sizes)
    elif args.kind == "kits21":
        synthetic.synth_kits21(args.out, seed=args.seed, shape=tuple(args.shape) if args.shape else None,
                               layout=args.layout, groups=args.groups, lesions=args.kidney_lesions, **sizes)
    else:
        synthetic.synth_kvasir(args.out, seed=args.seed, size=tuple(args.shape[-2:]) if args.shape else (64, 64),
                               **sizes)
    print(f"wrote synthetic {args.kind} sources to {Path(args.out).resolve()}")
    return 0


def _source_cases(items: "list[str] | None") -> "dict[str, int]":
    """``["KiTS19=12", ...]`` -> ``{"KiTS19": 12}`` (``synth mots --source-cases``)."""
    from nnunet_transfer.errors import NnUNetTransferError

    out = {}
    for item in items or []:
        source, sep, number = item.partition("=")
        if not sep or not number.strip().isdigit():
            raise NnUNetTransferError(f"--source-cases takes SOURCE=N, got {item!r}", fix="write it as KiTS19=12")
        out[source.strip()] = int(number)
    return out


#: the dataset name each converter uses without --name
DEFAULT_DATASET_NAMES = {"mots": "MOTS", "kits21": "KiTS21", "kvasir": "KvasirSEG"}


def _cmd_convert(args: argparse.Namespace) -> int:
    if args.kind == "mots":
        from nnunet_transfer.data.convert_mots import convert_mots

        folder = convert_mots(args.source, args.d, name=args.name or DEFAULT_DATASET_NAMES["mots"],
                              split_file=args.split, tasks=args.tasks, num_workers=args.np,
                              geometry_mismatch=args.geometry_mismatch, force=args.force)
    elif args.kind == "kits21":
        from nnunet_transfer.data.convert_kits import convert_kits, list_mots_overlap

        if args.list_mots_overlap:
            print("\n".join(list_mots_overlap(args.source)))
            return 0
        folder = convert_kits(args.source, args.d, name=args.name or DEFAULT_DATASET_NAMES["kits21"],
                              exclude_mots_overlap=args.exclude_mots_overlap,
                              only_mots_overlap=args.only_mots_overlap, num_workers=args.np,
                              geometry_mismatch=args.geometry_mismatch, force=args.force)
    else:
        from nnunet_transfer.data.convert_kvasir import convert_kvasir

        folder = convert_kvasir(args.source, args.d, name=args.name or DEFAULT_DATASET_NAMES["kvasir"],
                                num_workers=args.np, image_preprocessing=args.image_preprocessing, force=args.force)
    print(f"nnU-Net raw dataset written to {folder}")
    return 0


def _cmd_points_to_labels(args: argparse.Namespace) -> int:
    from nnunet_transfer.data.point_labels import write_point_labels

    written = write_point_labels(args.points, args.dataset_dir, radius_mm=args.radius_mm, coordinates=args.coordinates,
                                 overwrite=args.overwrite)
    print(f"wrote {len(written)} sphere label files into {Path(args.dataset_dir) / 'labelsTr'}")
    return 0


def _cmd_clip_intensities(args: argparse.Namespace) -> int:
    from nnunet_transfer.data.intensity_clip import clip_dataset

    clip_dataset(args.source, args.target, percentiles=args.percentiles, window=args.window,
                 file_ending=args.file_ending, force=args.force)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``nnunet-transfer`` parser."""
    p = sub.add_parser("synth", help="write seeded synthetic data in an official dataset layout")
    p.add_argument("kind", choices=["mots", "kits21", "kvasir"], help="which official layout to imitate")
    p.add_argument("out", help="output folder (the source root a converter then reads)")
    p.add_argument("--cases", type=positive_int, default=None, help="cases per source (default: small)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (the same seed writes the same data)")
    p.add_argument("--shape", type=positive_int, nargs="+", help="volume shape z y x (kvasir: height width)")
    p.add_argument("--layout", choices=["kits21", "kits19", "kits23"], default="kits21", help="kits21 only")
    p.add_argument("--source-cases", nargs="+", metavar="SOURCE=N",
                   help="mots only: cases of particular sources instead of --cases (e.g. KiTS19=12)")
    p.add_argument("--kidney-lesions", choices=KIDNEY_LESION_CHOICES, default="standard",
                   help="mots (KiTS19 folder), kits21: kidney tumours and cysts as drawn by default; large and dark "
                        "(muscle-like HU); or large and hyper-enhancing (bright: what a short CPU training can "
                        "learn; the demo's data)")
    p.add_argument("--groups", type=positive_int, default=None,
                   help="kits21 only: also write segmentation_samples/ with this many groups, as the official "
                        "sample_segmentations.py would (a fresh clone has none)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("convert", help="convert an official dataset layout into an nnU-Net raw dataset")
    p.add_argument("kind", choices=["mots", "kits21", "kvasir"], help="which source dataset the folder holds")
    p.add_argument("source", help="root folder of the source data")
    p.add_argument("-d", type=dataset_id, required=True, help="nnU-Net dataset id")
    p.add_argument("--name", help="dataset name (DatasetXXX_NAME)")
    p.add_argument("--split", help="mots: JSON {'train': [...], 'test': [...]} or DoDNet list file")
    p.add_argument("--tasks", nargs="+", help="mots: only these tasks (liver kidney hepatic_vessel ...)")
    p.add_argument("--exclude-mots-overlap", action="store_true", help="kits21: leave out the KiTS19 cases")
    p.add_argument("--only-mots-overlap", action="store_true", help="kits21: only the KiTS19 cases")
    p.add_argument("--list-mots-overlap", action="store_true", help="kits21: print the overlapping case ids")
    p.add_argument("--geometry-mismatch", choices=["error", "use-image", "skip"], default="error",
                   help="mots, kits21: what an image/label header mismatch does: error (default), use-image (write "
                        "the label with the image's geometry when the array sizes agree; LiTS case 53) or skip "
                        "(leave the case out); both are listed in the summary")
    p.add_argument("--image-preprocessing", choices=["localization-paper", "attention-paper"], default=None,
                   help="kvasir: a 2D paper's preprocessing: localization-paper (grey, normalised, CLAHE, gamma) or "
                        "attention-paper (256 x 256; [0, 1] channels that the brain U-Net maps to [-1, 1])")
    p.add_argument("-np", type=positive_int, default=1, help="worker processes")
    p.add_argument("--force", action="store_true", help="replace an existing dataset of the same id and name")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("points-to-labels", help="localisation data with only centres annotated: write small sphere "
                                                "labels into an nnU-Net raw dataset")
    p.add_argument("points", help="JSON {case_id: point}")
    p.add_argument("dataset_dir", help="the nnU-Net raw dataset folder (DatasetXXX_Name)")
    p.add_argument("--radius-mm", type=positive_float, default=3.0,
                   help="sphere radius in mm (default 3); at least the spacing of the configuration you train")
    p.add_argument("--coordinates", choices=["world", "voxel"], default="world",
                   help="world: x, y, z in mm (ITK/LPS); voxel: z, y, x array index")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in labelsTr")
    p.set_defaults(func=_cmd_points_to_labels)

    p = sub.add_parser("clip-intensities", help="Med3D's per-volume clip: copy an nnU-Net raw dataset (or a folder of "
                                                "images to predict) with every image clipped to its own percentiles "
                                                "or to a fixed window; plan it with -pl Med3DPlanner (per-volume "
                                                "z-score)")
    p.add_argument("source", help="nnU-Net raw dataset folder (with dataset.json) or a folder of images")
    p.add_argument("target", help="the folder to write (a new DatasetXXX_Name in nnUNet_raw, or an input folder)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--percentiles", type=percentile, nargs=2, metavar=("LOW", "HIGH"),
                       help="clip each image to these percentiles of its own values (default: 0.5 99.5, the paper)")
    group.add_argument("--window", type=finite_float, nargs=2, metavar=("LOW", "HIGH"),
                       help="clip to fixed bounds instead, e.g. -200 250 (HU, the paper's LiTS window)")
    p.add_argument("--file-ending", default=None, help="image file ending (default: dataset.json's, else .nii.gz)")
    p.add_argument("--force", action="store_true", help="replace an existing target")
    p.set_defaults(func=_cmd_clip_intensities)
