"""``nnunet-transfer``: the commands that sit beside nnU-Net's own ``nnUNetv2_*`` commands.

Each subcommand imports its implementation lazily so that ``nnunet-transfer env`` (run in every new shell) stays
instant. Errors the user can fix (:class:`~nnunet_transfer.errors.NnUNetTransferError`, missing files, bad data,
unset variables, a full disk) are printed as one clear message with exit code 1, without a traceback; ``--debug``
shows the traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, List, Optional

from nnunet_transfer import __version__


def _cmd_env(args: argparse.Namespace) -> int:
    from nnunet_transfer.discovery import export_lines

    print(export_lines(Path(args.workspace) if args.workspace else None))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from nnunet_transfer.doctor import run_doctor

    return run_doctor()


def _cmd_synth(args: argparse.Namespace) -> int:
    from nnunet_transfer.data import synthetic

    sizes = {"cases": args.cases} if args.cases is not None else {}
    if args.kind == "mots":
        synthetic.synth_mots(args.out, seed=args.seed, shape=tuple(args.shape) if args.shape else None, **sizes)
    elif args.kind == "kits21":
        synthetic.synth_kits21(args.out, seed=args.seed, shape=tuple(args.shape) if args.shape else None,
                               layout=args.layout, groups=args.groups, **sizes)
    else:
        synthetic.synth_kvasir(args.out, seed=args.seed, size=tuple(args.shape[-2:]) if args.shape else (64, 64),
                               **sizes)
    print(f"wrote synthetic {args.kind} sources to {Path(args.out).resolve()}")
    return 0


#: the dataset name each converter uses without --name
DEFAULT_DATASET_NAMES = {"mots": "MOTS", "kits21": "KiTS21", "kvasir": "KvasirSEG"}


def _prepare_conversion(args: argparse.Namespace) -> None:
    """Before converting: refuse to replace an existing dataset without --force (the converters replace it)."""
    from nnunet_transfer.data.existing_dataset import refuse_to_replace
    from nnunet_transfer.data.raw_dataset import dataset_folder_name, nnunet_raw_dir

    target = nnunet_raw_dir() / dataset_folder_name(args.d, args.name or DEFAULT_DATASET_NAMES[args.kind])
    refuse_to_replace(target, args.force)


def _cmd_convert(args: argparse.Namespace) -> int:
    if not getattr(args, "list_mots_overlap", False):
        _prepare_conversion(args)
    if args.kind == "mots":
        from nnunet_transfer.data.convert_mots import convert_mots

        folder = convert_mots(args.source, args.d, name=args.name or DEFAULT_DATASET_NAMES["mots"],
                              split_file=args.split, tasks=args.tasks, num_workers=args.np,
                              geometry_mismatch=args.geometry_mismatch)
    elif args.kind in ("kits21", "kits"):
        from nnunet_transfer.data.convert_kits import convert_kits, list_mots_overlap

        if args.list_mots_overlap:
            print("\n".join(list_mots_overlap(args.source)))
            return 0
        folder = convert_kits(args.source, args.d, name=args.name or DEFAULT_DATASET_NAMES["kits21"],
                              exclude_mots_overlap=args.exclude_mots_overlap,
                              only_mots_overlap=args.only_mots_overlap, num_workers=args.np,
                              geometry_mismatch=args.geometry_mismatch)
    else:
        from nnunet_transfer.data.convert_kvasir import convert_kvasir

        folder = convert_kvasir(args.source, args.d, name=args.name or DEFAULT_DATASET_NAMES["kvasir"],
                                num_workers=args.np)
    print(f"nnU-Net raw dataset written to {folder}")
    return 0


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

    dataset_json = json.loads(_mots_dataset_json(args).read_text())
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from nnunet_transfer.demo import DemoConfig, run_demo

    config = DemoConfig(workspace=Path(args.workspace) if args.workspace else None, mots_cases=args.mots_cases,
                        target_cases=tuple(args.target_cases), val_cases=args.val_cases, test_cases=args.test_cases,
                        seeds=tuple(args.seeds), pretrain_epochs=args.pretrain_epochs,
                        pretrain_iterations=args.pretrain_iterations, epochs=args.epochs, iterations=args.iterations,
                        data_seed=args.data_seed, shape=tuple(args.shape), base_features=args.base_features,
                        max_features=args.max_features)
    run_demo(config)
    return 0


def _cmd_align_plans(args: argparse.Namespace) -> int:
    from nnunet_transfer.transfer.align import align_plans

    plans_file = align_plans(args.s, args.t, source_plans=args.sp, target_plans=args.tp,
                             configurations=args.c, preprocess=not args.no_preprocess,
                             pretrained_checkpoint=args.pretrained, num_processes=args.np)
    print(f"aligned plans written to {plans_file}")
    print(f"train with: nnUNetv2_train {args.t} {args.c[0]} FOLD -tr <trainer> -p {plans_file.stem} "
          + ("" if args.pretrained else "-pretrained_weights <pretraining checkpoint_final.pth>"))
    return 0


def _cmd_set_pretrained(args: argparse.Namespace) -> int:
    from nnunet_transfer.transfer.record import PretrainedRecord, plans_file_of, write_record

    plans_file = plans_file_of(args.d, args.p)
    if args.remove:
        write_record(plans_file, args.c, None)
        print(f"removed the pretrained-weights record of {args.c} from {plans_file}")
        return 0
    if not args.checkpoint:
        raise ValueError("give the checkpoint to record (or --remove)")
    prefix_map = dict(item.split("=", 1) for item in (args.prefix_map or []))
    record = PretrainedRecord(checkpoint=args.checkpoint, prefix_map=prefix_map, min_fraction=args.min_fraction,
                              description=args.description or "", adapt=not args.no_adapt,
                              kernel_reduce=args.kernel_reduce, kernel_grow=args.kernel_grow)
    if args.exclude is not None:
        record.exclude = list(args.exclude)
    write_record(plans_file, args.c, record)
    print(f"{plans_file} [{args.c}] now starts from {Path(args.checkpoint).resolve()}")
    print(f"check it: nnunet-transfer transfer-check -d {args.d} -c {args.c} -tr <trainer> -p {args.p}")
    print(f"then train WITHOUT -pretrained_weights: nnUNetv2_train {args.d} {args.c} FOLD -tr <trainer> -p {args.p}")
    return 0


def _cmd_transfer_check(args: argparse.Namespace) -> int:
    from nnunet_transfer.transfer.check import transfer_check

    report, mode = transfer_check(args.checkpoint, args.d, args.c, args.tr, plans=args.p)
    print(report)
    print(f"path: {mode}")
    if args.o:
        Path(args.o).write_text(json.dumps(report.to_json(), indent=2))
    return 0


def _cmd_extract_encoder(args: argparse.Namespace) -> int:
    from nnunet_transfer.transfer.encoder_export import encoder_state_dict, extract_encoder

    path = extract_encoder(args.checkpoint, args.o, strip_prefix=args.strip_prefix, overwrite=args.overwrite,
                           layout=args.layout)
    n = len(encoder_state_dict(path))
    print(f"wrote {n} encoder tensors of {args.checkpoint} to {path}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from nnunet_transfer.planning.run_planner import PLANNERS, plan_experiment

    if args.pl not in PLANNERS:
        raise ValueError(f"unknown planner {args.pl!r}; available: {', '.join(sorted(PLANNERS))}")
    plans_file = plan_experiment(args.d, args.pl, gpu_memory_target_gb=args.gpu_memory_target,
                                 plans_name=args.overwrite_plans_name, preprocess=args.preprocess,
                                 configurations=tuple(args.c), num_processes=args.np)
    print(f"plans written to {plans_file}")
    return 0


def _cmd_plan_arch(args: argparse.Namespace) -> int:
    from nnunet_transfer.planning.plan_arch import plan_arch

    plans_file = plan_arch(args.d, args.arch, decoder=args.decoder, weights=args.weights, source_plans=args.sp,
                           configuration=args.c, plans_name=args.p, preprocess=not args.no_preprocess,
                           num_processes=args.np)
    trainer = "MLEAMTrainer" if args.decoder == "mleam" else "Med3DFinetuneTrainer"
    print(f"plans written to {plans_file}")
    print(f"train with: nnUNetv2_train {args.d} {args.c} FOLD -tr {trainer} -p {plans_file.stem}"
          + ("   (the pretrained weights come from the plans' record: no -pretrained_weights)" if args.weights else ""))
    return 0


def _cmd_points_to_labels(args: argparse.Namespace) -> int:
    from nnunet_transfer.data.point_labels import write_point_labels

    written = write_point_labels(args.points, args.dataset_dir, radius_mm=args.radius_mm, coordinates=args.coordinates,
                                 overwrite=args.overwrite)
    print(f"wrote {len(written)} sphere label files into {Path(args.dataset_dir) / 'labelsTr'}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from nnunet_transfer.export import export_model

    zip_path = export_model(args.d, args.c, args.tr, plans=args.p, folds=tuple(args.f), output_zip=args.o,
                            checkpoint=args.chk)
    print(f"exported to {zip_path}")
    return 0


def _cmd_predict_export(args: argparse.Namespace) -> int:
    from nnunet_transfer.export import install_and_predict

    out = install_and_predict(args.zip, args.i, args.o, device=args.device, force=args.force,
                              configuration=args.c, folds=args.f)
    print(f"predictions written to {out}")
    return 0


def _cmd_predict_tasks(args: argparse.Namespace) -> int:
    from nnunet_transfer.inference.predict_tasks import predict_tasks

    written = predict_tasks(args.i, args.o, args.d, args.c, args.tr, args.f, tasks=args.tasks, plans=args.p,
                            checkpoint=args.chk, device=args.device, use_mirroring=not args.disable_tta,
                            tile_step_size=args.step_size, postprocess=args.postprocess)
    print(f"wrote {len(written)} per-task label maps to {Path(args.o).resolve()}/<task>/")
    return 0


def _cmd_verify_weights(args: argparse.Namespace) -> int:
    from nnunet_transfer.pretrained.registry import verify_checkpoint

    report = verify_checkpoint(args.path, args.record)
    print(report)
    return 0 if report.ok else 1


class _EncoderNames:
    """``plan-arch --arch`` choices: the encoder registry's names, read only when argparse checks or lists them (the
    registry imports torch, which the other commands do not need)."""

    @staticmethod
    def _names() -> List[str]:
        from nnunet_transfer.architectures.encoders import ENCODERS

        return list(ENCODERS)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self):
        return iter(self._names())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-transfer",
        description="Transfer learning for nnU-Net v2: MOTS/DoDNet pretraining, fine-tuning, Med3D, MLEAM.")
    parser.add_argument("--version", action="version", version=f"nnunet-transfer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("env", help="print the shell line that lets nnU-Net find our trainers: "
                                   'eval "$(nnunet-transfer env)"')
    p.add_argument("--workspace", help="also point unset nnUNet_raw/_preprocessed/_results into this folder")
    p.set_defaults(func=_cmd_env)

    p = sub.add_parser("doctor", help="check nnU-Net path variables, trainer discovery and the torch device")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("synth", help="write seeded synthetic data in an official dataset layout")
    p.add_argument("kind", choices=["mots", "kits21", "kvasir"], help="which official layout to imitate")
    p.add_argument("out", help="output folder (the source root a converter then reads)")
    p.add_argument("--cases", type=int, default=None, help="cases per source (default: small)")
    p.add_argument("--seed", type=int, default=0, help="random seed (the same seed writes the same data)")
    p.add_argument("--shape", type=int, nargs="+", help="volume shape z y x (kvasir: height width)")
    p.add_argument("--layout", choices=["kits21", "kits19", "kits23"], default="kits21", help="kits21 only")
    p.add_argument("--groups", type=int, default=None,
                   help="kits21 only: also write segmentation_samples/ with this many groups, as the official "
                        "sample_segmentations.py would (a fresh clone has none)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("convert", help="convert an official dataset layout into an nnU-Net raw dataset")
    p.add_argument("kind", choices=["mots", "kits21", "kvasir"], help="which source dataset the folder holds")
    p.add_argument("source", help="root folder of the source data")
    p.add_argument("-d", type=int, required=True, help="nnU-Net dataset id")
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
    p.add_argument("-np", type=int, default=1, help="worker processes")
    p.add_argument("--force", action="store_true", help="replace an existing dataset of the same id and name")
    p.set_defaults(func=_cmd_convert)

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
    p.add_argument("-np", type=int, default=1,
                   help="kits21: worker processes scoring cases in parallel (spawned, as in nnU-Net's evaluation)")
    p.set_defaults(func=_cmd_evaluate)

    from nnunet_transfer.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser("demo", help="MOTS pretraining -> KiTS21 fine-tuning from scratch and pretrained, over seeds, "
                                    "on embedded synthetic data, on CPU")
    p.add_argument("--workspace", help="folder for nnU-Net's data (default: nnUNet_* variables or ./nnunet_workspace)")
    p.add_argument("--mots-cases", type=int, default=d.mots_cases, help="synthetic cases per MOTS source")
    p.add_argument("--target-cases", type=int, nargs="+", default=list(d.target_cases), metavar="N",
                   help="labelled KiTS21 cases per fine-tuning; several numbers (e.g. 2 4 8) give the few-label curve")
    p.add_argument("--val-cases", type=int, default=d.val_cases, help="KiTS21 cases for nnU-Net's validation curves")
    p.add_argument("--test-cases", type=int, default=d.test_cases, help="held-out KiTS21 cases that are scored")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds), help="one fine-tuning per seed and side")
    p.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs, help="MOTS pretraining epochs")
    p.add_argument("--pretrain-iterations", type=int, default=d.pretrain_iterations, help="iterations per epoch")
    p.add_argument("--epochs", type=int, default=d.epochs, help="fine-tuning epochs")
    p.add_argument("--iterations", type=int, default=d.iterations, help="fine-tuning iterations per epoch")
    p.add_argument("--shape", type=int, nargs=3, default=list(d.shape), help="synthetic volume shape z y x")
    p.add_argument("--data-seed", type=int, default=d.data_seed, help="seed of the synthetic data")
    p.add_argument("--base-features", type=int, default=d.base_features,
                   help="demo plans: features of the first stage (nnU-Net: 32)")
    p.add_argument("--max-features", type=int, default=d.max_features, help="demo plans: feature cap (nnU-Net: 320)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("align-plans", help="give a fine-tuning dataset the pretraining dataset's plans and preprocess "
                                           "it (fingerprint -> move plans -> preprocess)")
    p.add_argument("-s", type=int, required=True, help="pretraining (source) dataset id, e.g. 600")
    p.add_argument("-t", type=int, required=True, help="fine-tuning (target) dataset id, e.g. 601")
    p.add_argument("-sp", default="nnUNetPlans", help="source plans identifier")
    p.add_argument("-tp", default=None, help="target plans identifier (default: <sp>_from<source id>)")
    p.add_argument("-c", nargs="+", default=["3d_fullres"], help="configurations to preprocess")
    p.add_argument("--pretrained", help="also write this checkpoint as the plans' pretrained-weights record")
    p.add_argument("--no-preprocess", action="store_true", help="write the plans only (preprocess later with "
                                                                "nnUNetv2_preprocess)")
    p.add_argument("-np", type=int, default=2, help="processes for nnU-Net's preprocessing")
    p.set_defaults(func=_cmd_align_plans)

    p = sub.add_parser("set-pretrained", help="write a pretrained-weights record into a dataset's plans (for "
                                              "partial or foreign checkpoints that -pretrained_weights refuses)")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file (nnU-Net v2 .pth, v1 .model, nnssl, MedicalNet, "
                                                 "state dict, .safetensors) or an nnU-Net results folder / model zip")
    p.add_argument("-d", type=int, required=True, help="nnU-Net dataset id of the fine-tuning dataset")
    p.add_argument("-c", default="3d_fullres", help="configuration that gets the record (default: 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    p.add_argument("--prefix-map", nargs="+", metavar="OLD=NEW", help="rename checkpoint key prefixes, e.g. =encoder.")
    p.add_argument("--exclude", nargs="*",
                   help="checkpoint key patterns never loaded (default: .seg_layers. controller.)")
    p.add_argument("--min-fraction", type=float, default=0.0, help="fail when less of the network is loaded")
    p.add_argument("--description", default=None, help="free text stored in the record")
    p.add_argument("--remove", action="store_true", help="remove the record")
    p.add_argument("--no-adapt", action="store_true", help="load only tensors of equal shape (no kernel, stride, "
                                                           "stage or feature-count adaptation)")
    p.add_argument("--kernel-reduce", choices=["mean", "sum"], default="mean",
                   help="kernel 3 -> 1 along an axis: mean (nnU-Net's rule, default) or sum of the taps")
    p.add_argument("--kernel-grow", choices=["centre", "spread"], default="centre",
                   help="kernel 1 -> 3 along an axis: centre placement (default) or spread")
    p.set_defaults(func=_cmd_set_pretrained)

    p = sub.add_parser("transfer-check", help="dry run: what a checkpoint gives a fine-tuning network (no training)")
    p.add_argument("checkpoint", nargs="?", help="checkpoint (default: the plans' pretrained-weights record)")
    p.add_argument("-d", type=int, required=True, help="nnU-Net dataset id of the fine-tuning dataset")
    p.add_argument("-c", default="3d_fullres", help="configuration (default: 3d_fullres)")
    p.add_argument("-tr", required=True, help="trainer class that will fine-tune")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    p.add_argument("-o", help="also write the report as JSON")
    p.set_defaults(func=_cmd_transfer_check)

    p = sub.add_parser("extract-encoder", help="write the encoder (and stem) of a checkpoint as a plain state dict")
    p.add_argument("checkpoint", help="any checkpoint set-pretrained takes (file, results folder or model zip)")
    p.add_argument("-o", required=True, help="output file: .pth/.pt (torch.save of a dict of tensors) or .safetensors")
    p.add_argument("--strip-prefix", action="store_true", help="drop the leading 'encoder.' from the key names")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--layout", choices=("plain", "medicalnet"), default="plain",
                   help="medicalnet: a Med3D ResNet encoder as MedicalNet's files ({'state_dict': {'module.conv1."
                        "weight': ...}}), for plan-arch --weights")
    p.set_defaults(func=_cmd_extract_encoder)

    p = sub.add_parser("plan", help="run one of our experiment planners through nnU-Net's planning API")
    p.add_argument("-d", type=int, required=True, help="nnU-Net dataset id (its fingerprint must exist)")
    p.add_argument("-pl", required=True, help="planner class, e.g. ResUNetASPPPlanner")
    p.add_argument("-c", nargs="+", default=["3d_fullres"], help="configurations to preprocess with --preprocess")
    p.add_argument("-gpu_memory_target", type=float, default=None,
                   help="GPU memory the plans are sized for, in GB (nnU-Net's default: 8)")
    p.add_argument("-overwrite_plans_name", default=None,
                   help="name of the plans written (default: the planner's, e.g. nnUNetResUNetASPPPlans)")
    p.add_argument("--preprocess", action="store_true", help="also run nnU-Net's preprocessing with these plans")
    p.add_argument("-np", type=int, default=2, help="processes for nnU-Net's preprocessing")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("plan-arch", help="write plans that put a Med3D encoder and/or the MLEAM decoder into a planned "
                                         "dataset (optionally with MedicalNet weights)")
    p.add_argument("-d", type=int, required=True, help="nnU-Net dataset id (planned with nnU-Net's planner first)")
    p.add_argument("-a", "--arch", required=True, choices=_EncoderNames(), metavar="ARCH",
                   help="encoder, a name of the encoder registry: %(choices)s")
    p.add_argument("--decoder", default=None, help="mleam (default: the U-Net decoder)")
    p.add_argument("--weights", help="MedicalNet checkpoint (or nnU-Net checkpoint for --arch plain)")
    p.add_argument("-sp", default="nnUNetPlans", help="plans to start from")
    p.add_argument("-c", default="3d_fullres", help="configuration to start from; the only one the new plans hold")
    p.add_argument("-p", default=None, help="name of the new plans (default derived from arch/decoder)")
    p.add_argument("--no-preprocess", action="store_true",
                   help="write the plans only (default: preprocess when the plans' data is not there yet)")
    p.add_argument("-np", type=int, default=2, help="processes for nnU-Net's preprocessing")
    p.set_defaults(func=_cmd_plan_arch)

    p = sub.add_parser("points-to-labels", help="localisation data with only centres annotated: write small sphere "
                                                "labels into an nnU-Net raw dataset")
    p.add_argument("points", help="JSON {case_id: point}")
    p.add_argument("dataset_dir", help="the nnU-Net raw dataset folder (DatasetXXX_Name)")
    p.add_argument("--radius-mm", type=float, default=3.0,
                   help="sphere radius in mm (default 3); at least the spacing of the configuration you train")
    p.add_argument("--coordinates", choices=["world", "voxel"], default="world",
                   help="world: x, y, z in mm (ITK/LPS); voxel: z, y, x array index")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in labelsTr")
    p.set_defaults(func=_cmd_points_to_labels)

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
    p.add_argument("--disable-tta", action="store_true", help="no mirroring (faster)")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step (nnU-Net's default 0.5)")
    p.add_argument("--postprocess", choices=["dodnet"], default=None,
                   help="DoDNet's post-processing of each task's map (largest components, small tumours removed)")
    p.set_defaults(func=_cmd_predict_tasks)

    p = sub.add_parser("verify-weights", help="check a downloaded MedicalNet checkpoint against the registry")
    p.add_argument("path", help="the downloaded checkpoint file (e.g. resnet_10_23dataset.pth)")
    p.add_argument("--record", help="registry record name (default: from the file name)")
    p.set_defaults(func=_cmd_verify_weights)
    return parser


#: exceptions that mean "the user's input is wrong", printed without a traceback (OSError: a full disk, missing
#: permissions, a file where a folder should be)
def _user_errors() -> tuple:
    from nnunet_transfer.errors import NnUNetTransferError

    return (NnUNetTransferError, OSError, ValueError, RuntimeError)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    if args.debug:
        return func(args)
    try:
        return func(args)
    except _user_errors() as e:
        message = str(e)
        print(f"nnunet-transfer {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
