"""``nnunet-transfer`` commands. Planning: our experiment planners, plans with other architectures, and plans aligned
with a pretraining dataset."""

from __future__ import annotations

import argparse
from typing import List

from nnunet_transfer.cli.arg_types import dataset_id, positive_float, positive_int
from nnunet_transfer.cli.untrusted_options import add_trust_architecture
from nnunet_transfer.errors import InvalidValueError


def _cmd_align_plans(args: argparse.Namespace) -> int:
    from nnunet_transfer.transfer.align import align_plans

    plans_file = align_plans(args.s, args.t, source_plans=args.sp, target_plans=args.tp,
                             configurations=args.c, preprocess=not args.no_preprocess,
                             pretrained_checkpoint=args.pretrained, num_processes=args.np,
                             trusted=args.trust_architecture)
    print(f"aligned plans written to {plans_file}")
    if args.avoid_leakage or args.mots_split:
        from nnunet_transfer.data.leakage import avoid_leakage, describe, mots_kidney_splits

        splits = mots_kidney_splits(args.mots_split) if args.mots_split else None
        overlap, splits_file = avoid_leakage(args.s, args.t, splits=splits)
        print(describe(overlap, str(splits_file)))
        print(f"splits without leakage written to {splits_file}")
    print(f"train with: nnUNetv2_train {args.t} {args.c[0]} FOLD -tr <trainer> -p {plans_file.stem} "
          + ("" if args.pretrained else "-pretrained_weights <pretraining checkpoint_final.pth>"))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from nnunet_transfer.planning.run_planner import PLANNERS, plan_experiment

    if args.pl not in PLANNERS:
        raise InvalidValueError(f"unknown planner {args.pl!r}; available: {', '.join(sorted(PLANNERS))}")
    plans_file = plan_experiment(args.d, args.pl, gpu_memory_target_gb=args.gpu_memory_target,
                                 plans_name=args.overwrite_plans_name, preprocess=args.preprocess,
                                 configurations=tuple(args.c), num_processes=args.np, spacing=args.spacing,
                                 patch_size=args.patch_size)
    print(f"plans written to {plans_file}")
    if args.spacing or args.patch_size:
        import json

        from nnunet_transfer.planning.fixed_patch import pooling_summary

        plan = json.loads(plans_file.read_text())["configurations"]["3d_fullres"]
        print("3d_fullres: " + ", ".join(f"{k} {v}" for k, v in pooling_summary(plan).items()))
    return 0


class _ArchitectureNames:
    """``plan-arch --arch`` choices: the encoder and network registries' names, read only when argparse checks or
    lists them (the registries import torch, which the other commands do not need)."""

    @staticmethod
    def _names() -> List[str]:
        from nnunet_transfer.architectures.networks import architecture_names

        return architecture_names()

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self):
        return iter(self._names())


def _cmd_plan_arch(args: argparse.Namespace) -> int:
    from nnunet_transfer.planning.plan_arch import plan_arch

    plans_file = plan_arch(args.d, args.arch, decoder=args.decoder, weights=args.weights, source_plans=args.sp,
                           configuration=args.c, plans_name=args.p, preprocess=not args.no_preprocess,
                           num_processes=args.np, keep_record=args.keep_record)
    from nnunet_transfer.architectures.networks import NETWORKS

    trainer = ("MLEAMTrainer" if args.decoder == "mleam" else
               "LocalizationPretrainTrainer (then FrozenEncoderTrainer)" if args.arch == "localization-paper" else
               "FineTuneTrainer" if args.arch in NETWORKS else "Med3DFinetuneTrainer")
    print(f"plans written to {plans_file}")
    print(f"train with: nnUNetv2_train {args.d} {args.c} FOLD -tr {trainer} -p {plans_file.stem}"
          + ("   (the pretrained weights come from the plans' record: no -pretrained_weights)" if args.weights else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``nnunet-transfer`` parser."""
    p = sub.add_parser("align-plans", help="give a fine-tuning dataset the pretraining dataset's plans and preprocess "
                                           "it (fingerprint -> move plans -> preprocess)")
    p.add_argument("-s", type=dataset_id, required=True, help="pretraining (source) dataset id, e.g. 600")
    p.add_argument("-t", type=dataset_id, required=True, help="fine-tuning (target) dataset id, e.g. 601")
    p.add_argument("-sp", default="nnUNetPlans", help="source plans identifier")
    p.add_argument("-tp", default=None, help="target plans identifier (default: <sp>_from<source id>)")
    p.add_argument("-c", nargs="+", default=["3d_fullres"], help="configurations to preprocess")
    p.add_argument("--pretrained", help="also write this checkpoint as the plans' pretrained-weights record")
    p.add_argument("--no-preprocess", action="store_true", help="write the plans only (preprocess later with "
                                                                "nnUNetv2_preprocess)")
    p.add_argument("-np", type=positive_int, default=2, help="processes for nnU-Net's preprocessing")
    add_trust_architecture(p)
    p.add_argument("--avoid-leakage", action="store_true",
                   help="compare the images of both datasets and write the target's splits_final.json with every "
                        "case shared with the source in training only (see leakage-check)")
    p.add_argument("--mots-split", metavar="LIST",
                   help="DoDNet's MOTS_train.txt or MOTS_test.txt: use MOTS's own kidney split (one fold) as the "
                        "target's split, as the KiTS21 transfer paper does (implies --avoid-leakage)")
    p.set_defaults(func=_cmd_align_plans)

    p = sub.add_parser("plan", help="run one of our experiment planners through nnU-Net's planning API")
    p.add_argument("-d", type=dataset_id, required=True, help="nnU-Net dataset id (its fingerprint must exist)")
    p.add_argument("-pl", required=True, help="planner class, e.g. ResUNetASPPPlanner")
    p.add_argument("-c", nargs="+", default=["3d_fullres"], help="configurations to preprocess with --preprocess")
    p.add_argument("-gpu_memory_target", type=positive_float, default=None,
                   help="GPU memory the plans are sized for, in GB (nnU-Net's default: 8)")
    p.add_argument("-overwrite_plans_name", default=None,
                   help="name of the plans written (default: the planner's, e.g. nnUNetResUNetASPPPlans)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=None,
                   help="3d_fullres target spacing in mm (nnU-Net's overwrite_target_spacing), e.g. 0.78125 0.78125 "
                        "0.78125")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                   help="3d_fullres patch size; pooling topology and batch size follow nnU-Net's rules for it")
    p.add_argument("--preprocess", action="store_true", help="also run nnU-Net's preprocessing with these plans")
    p.add_argument("-np", type=positive_int, default=2, help="processes for nnU-Net's preprocessing")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("plan-arch", help="write plans that put another network into a planned dataset: a public "
                                         "model's network (STU-Net, UNet3D, DoDNet, Swin UNETR, SegResNet), the "
                                         "localisation paper's U-Net, a Med3D encoder and/or the MLEAM decoder "
                                         "(optionally with its pretrained weights)")
    p.add_argument("-d", type=dataset_id, required=True,
                   help="nnU-Net dataset id (planned with nnU-Net's planner first)")
    p.add_argument("-a", "--arch", default=None, choices=_ArchitectureNames(), metavar="ARCH",
                   help="network or encoder, a name of the network or encoder registry: %(choices)s (default with "
                        "--decoder mleam: plain, the plans' own encoder)")
    p.add_argument("--decoder", default=None, help="mleam (default: the U-Net decoder)")
    p.add_argument("--weights", help="the released file of the public model (its format is recognised), a MedicalNet "
                                     "checkpoint, or an nnU-Net checkpoint for --arch plain")
    p.add_argument("-sp", default="nnUNetPlans", help="plans to start from")
    p.add_argument("--keep-record", action="store_true",
                   help="carry the source plans' pretrained-weights record into the new plans (default: dropped, "
                        "since it was made for the source architecture)")
    p.add_argument("-c", default="3d_fullres", help="configuration to start from; the only one the new plans hold")
    p.add_argument("-p", default=None, help="name of the new plans (default derived from arch/decoder)")
    p.add_argument("--no-preprocess", action="store_true",
                   help="write the plans only (default: preprocess when the plans' data is not there yet)")
    p.add_argument("-np", type=positive_int, default=2, help="processes for nnU-Net's preprocessing")
    p.set_defaults(func=_cmd_plan_arch)
