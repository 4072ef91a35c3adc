"""``nnunet-transfer`` commands. Leakage between pretraining and fine-tuning: which target validation cases share
images with the pretraining data."""

from __future__ import annotations

import argparse


def _cmd_leakage_check(args: argparse.Namespace) -> int:
    from nnunet_transfer.data.leakage import check_leakage, describe

    overlap, _, origin = check_leakage(args.s, args.t, configuration=args.c, plans=args.p)
    print(describe(overlap, origin))
    return 1 if overlap.leaking else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``nnunet-transfer`` parser."""
    p = sub.add_parser("leakage-check", help="compare the images of a pretraining dataset with the validation folds "
                                             "of a fine-tuning dataset; exit 1 when a validation case was pretrained "
                                             "on")
    p.add_argument("-s", required=True, help="pretraining (source) dataset id or name: all of its imagesTr counts")
    p.add_argument("-t", required=True, help="fine-tuning (target) dataset id or name")
    p.add_argument("-c", default=None, help="configuration whose preprocessed cases nnU-Net's default 5 folds split "
                                            "when the target has no splits_final.json (default: the raw cases)")
    p.add_argument("-p", default="nnUNetPlans", help="plans of that configuration")
    p.set_defaults(func=_cmd_leakage_check)
