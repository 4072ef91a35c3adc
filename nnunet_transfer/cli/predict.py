"""``nnunet-transfer`` commands. Shipping and using trained models: export to a zip, install and predict, per-task MOTS
prediction."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_transfer.cli.arg_types import step_size
from nnunet_transfer.cli.untrusted_options import add_max_member_gb, add_trust_architecture, max_member_bytes
from nnunet_transfer.cli.notes import warnings_as_notes


def _cmd_export(args: argparse.Namespace) -> int:
    from nnunet_transfer.inference.export import export_model

    with warnings_as_notes():
        zip_path = export_model(args.d, args.c, args.tr, plans=args.p, folds=tuple(args.f), output_zip=args.o,
                                checkpoint=args.chk)
    print(f"exported to {zip_path}")
    return 0


def _cmd_predict_export(args: argparse.Namespace) -> int:
    from nnunet_transfer.inference.export import install_and_predict

    with warnings_as_notes():
        out = install_and_predict(args.zip, args.i, args.o, device=args.device, force=args.force,
                                  configuration=args.c, folds=args.f, trusted=args.trust_architecture,
                                  max_member_bytes=max_member_bytes(args))
    print(f"predictions written to {out}")
    return 0


def _cmd_predict_tasks(args: argparse.Namespace) -> int:
    from nnunet_transfer.inference.predict_tasks import predict_tasks

    written = predict_tasks(args.i, args.o, args.d, args.c, args.tr, args.f, tasks=args.tasks, plans=args.p,
                            checkpoint=args.chk, device=args.device, use_mirroring=not args.disable_tta,
                            tile_step_size=args.step_size, postprocess=args.postprocess,
                            trusted=args.trust_architecture)
    print(f"wrote {len(written)} per-task label maps to {Path(args.o).resolve()}/<task>/")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``nnunet-transfer`` parser."""
    p = sub.add_parser("export", help="pack a trained model into a zip for another machine or a challenge")
    p.add_argument("-d", required=True, help="dataset id or name of the trained model")
    p.add_argument("-c", nargs="+", default=["3d_fullres"], help="configurations to export (default: 3d_fullres)")
    p.add_argument("-tr", required=True, help="trainer class the model was trained with")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds to export (default: 0 1 2 3 4)")
    p.add_argument("-chk", default="checkpoint_final.pth",
                   help="checkpoint file of each fold (default: checkpoint_final.pth)")
    p.add_argument("-o", required=True, help="output zip")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict-export", help="install an exported zip and predict a folder (challenge containers)")
    p.add_argument("zip", help="model zip written by `nnunet-transfer export`")
    p.add_argument("-i", required=True, help="input folder of images (CASE_0000.nii.gz, ...)")
    p.add_argument("-o", required=True, help="output folder for the predicted label maps")
    p.add_argument("-device", default="cuda", choices=["cuda", "cpu"], help="torch device (default: cuda)")
    p.add_argument("-c", default=None, help="configuration (needed when the zip holds several)")
    p.add_argument("-f", nargs="+", default=None, help="folds to use (default: all exported folds)")
    p.add_argument("--force", action="store_true", help="replace a different model of the same name in "
                                                        "$nnUNet_results")
    add_trust_architecture(p)
    add_max_member_gb(p)
    p.set_defaults(func=_cmd_predict_export)

    p = sub.add_parser("predict-tasks", help="MOTS model: one label map per case and task (OUT/<task>/<case>), "
                                             "each from the task's own head, so overlapping structures are kept")
    p.add_argument("-i", required=True, help="input folder (CASE_0000.nii.gz)")
    p.add_argument("-o", required=True, help="output folder; maps go to OUT/<task>/CASE.nii.gz")
    p.add_argument("-d", required=True, help="dataset id or name of the MOTS model")
    p.add_argument("-c", default="3d_fullres", help="configuration (default: 3d_fullres)")
    p.add_argument("-tr", default="MOTSPretrainTrainer", help="trainer class (default: MOTSPretrainTrainer)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-f", nargs="+", default=["0"], help="folds to ensemble (or all)")
    p.add_argument("-chk", default="checkpoint_final.pth",
                   help="checkpoint file of each fold (default: checkpoint_final.pth)")
    p.add_argument("--tasks", nargs="+", help="only these tasks (liver kidney hepatic_vessel ...; default all)")
    p.add_argument("-device", default="cuda", choices=["cuda", "cpu"], help="torch device (default: cuda)")
    p.add_argument("--disable_tta", "--disable-tta", dest="disable_tta", action="store_true",
                   help="no mirroring (faster); nnU-Net's spelling (--disable-tta: the earlier one, still accepted)")
    p.add_argument("-step_size", type=step_size, default=0.5, help="sliding-window step (nnU-Net's default 0.5)")
    p.add_argument("--postprocess", choices=["dodnet"], default=None,
                   help="DoDNet's post-processing of each task's map (largest components, small tumours removed)")
    add_trust_architecture(p)
    p.set_defaults(func=_cmd_predict_tasks)
