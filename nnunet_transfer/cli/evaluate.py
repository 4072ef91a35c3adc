"""``nnunet-transfer`` commands. Scoring prediction folders: the KiTS21 challenge metrics and per-task MOTS metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_transfer.cli.arg_types import positive_int


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.kind == "kits21":
        from nnunet_transfer.evaluation.kits import evaluate_kits21, format_table

        out_json = args.o or str(Path(args.pred_dir) / "kits_metrics.json")
        results = evaluate_kits21(args.pred_dir, args.gt_dir, output_json=out_json, output_csv=args.csv,
                                  num_workers=args.np, require_all=args.require_all,
                                  reference="majority" if args.use_maj_voting_as_gt else "auto")
        print(format_table(results))
        print(f"metrics written to {out_json}")
        return 0
    from nnunet_transfer.data.mots_tasks import read_case_to_task
    from nnunet_transfer.evaluation.partial_label import evaluate_partial_label_folder, format_task_table

    from nnunet_transfer.utils.json_files import read_json_object

    dataset_json = read_json_object(_mots_dataset_json(args), fix="give the dataset.json written by `nnunet-transfer "
                                                                  "convert mots` (--dataset-json)")
    out_json = args.o or str(Path(args.pred_dir) / "summary_per_task.json")
    results = evaluate_partial_label_folder(args.pred_dir, args.gt_dir, read_case_to_task(dataset_json),
                                            dataset_json.get("file_ending", ".nii.gz"), output_json=out_json,
                                            with_hd95=True, convention=args.conventions,
                                            postprocessing=args.postprocess)
    setting = f"conventions {args.conventions}, post-processing {args.postprocess or 'none'}"
    print(format_task_table(results["mean"], f"Dice per task ({setting})"))
    print(format_task_table(results["hd95_mean"], f"HD95 per task (mm; {setting})"))
    print(f"metrics written to {out_json}")
    return 0


def _mots_dataset_json(args: argparse.Namespace) -> Path:
    """``--dataset-json``, else the dataset.json next to the reference folder (``.../DatasetXXX/labelsTr``)."""
    from nnunet_transfer.errors import NnUNetTransferError

    if args.dataset_json:
        return Path(args.dataset_json)
    candidate = Path(args.gt_dir).resolve().parent / "dataset.json"
    if candidate.is_file():
        return candidate
    raise NnUNetTransferError(
        f"evaluate mots needs the case-to-task map of the converted MOTS dataset, and {candidate} does not exist",
        file=candidate, fix="pass --dataset-json $nnUNet_raw/DatasetXXX_MOTS/dataset.json")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``nnunet-transfer`` parser."""
    p = sub.add_parser("evaluate", help="score a prediction folder")
    p.add_argument("kind", choices=["mots", "kits21"],
                   help="mots: Dice and HD95 per task of a MOTS model; kits21: the KiTS21 challenge metrics")
    p.add_argument("pred_dir", help="folder of predicted label maps (CASE.nii.gz)")
    p.add_argument("gt_dir", help="reference: mots: the converted dataset's label folder (labelsTr or labelsTs); "
                                  "kits21: label files named like the predictions, or the official kits21 case "
                                  "folders (kits21/data of a clone, or the clone)")
    p.add_argument("-o", help="output JSON")
    p.add_argument("--csv", help="kits21: also write a CSV")
    p.add_argument("--require-all", action="store_true",
                   help="kits21: fail when a reference case has no prediction (default: score the predictions given "
                        "and list the reference cases without one)")
    p.add_argument("--use-maj-voting-as-gt", action="store_true",
                   help="kits21: score against aggregated_MAJ_seg.nii.gz instead of the sampled segmentations "
                        "(the official option of the same name)")
    p.add_argument("--dataset-json", help="mots: dataset.json holding the case-to-task map")
    p.add_argument("--conventions", choices=["ours", "dodnet"], default="ours",
                   help="mots: empty-mask rules: ours (Dice/HD95 undefined when empty, left out of the means) or "
                        "DoDNet's postp.py (Dice 2|P&R|/(|P|+|R|+1), HD95 0 / 373.13 for empty masks)")
    p.add_argument("--postprocess", choices=["dodnet"], default=None,
                   help="mots: DoDNet's post-processing first (largest components, tumour inside the organ, "
                        "tumour components <= 50 voxels removed)")
    p.add_argument("-np", type=positive_int, default=1,
                   help="kits21: worker processes scoring cases in parallel (spawned, as in nnU-Net's evaluation)")
    p.set_defaults(func=_cmd_evaluate)
