"""``nnunet-transfer`` commands. Weight transfer: pretrained-weights records, the dry-run report, encoder extraction and
checkpoint verification."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nnunet_transfer.cli.arg_types import dataset_id, fraction
from nnunet_transfer.cli.untrusted_options import add_trust_architecture
from nnunet_transfer.errors import InvalidValueError


def _cmd_set_pretrained(args: argparse.Namespace) -> int:
    from nnunet_transfer.transfer.record import PretrainedRecord, plans_file_of
    from nnunet_transfer.transfer.set_pretrained import remove_pretrained, set_pretrained

    plans_file = plans_file_of(args.d, args.p)
    if args.remove:
        had_record, removed_info = remove_pretrained(plans_file, args.c)
        if had_record:
            print(f"removed the pretrained-weights record of {args.c} from {plans_file}")
        else:
            print(f"{plans_file} [{args.c}] has no pretrained-weights record: nothing removed")
        if removed_info:
            print(removed_info)
        return 0
    if not args.checkpoint and args.match_normalisation:  # plans that already have a record (plan-arch --weights)
        from nnunet_transfer.transfer.set_pretrained import match_recorded_normalisation

        new_file, messages = match_recorded_normalisation(plans_file, args.c)
        print("\n".join(messages))
        print(f"then train: nnUNetv2_train {args.d} {args.c} FOLD -tr <trainer> -p {new_file.stem}")
        return 0
    if not args.checkpoint:
        raise InvalidValueError("give the checkpoint to record (or --remove, or --match-normalisation for the "
                                "recorded one)")
    prefix_map = dict(item.split("=", 1) for item in (args.prefix_map or []))
    record = PretrainedRecord(checkpoint=args.checkpoint, prefix_map=prefix_map, min_fraction=args.min_fraction,
                              description=args.description or "", adapt=not args.no_adapt,
                              kernel_reduce=args.kernel_reduce, kernel_grow=args.kernel_grow,
                              trusted_architectures=list(args.trust_architecture))
    if args.exclude is not None:
        record.exclude = list(args.exclude)
    plans_file, messages = set_pretrained(plans_file, args.c, record, match_normalisation=args.match_normalisation)
    plans = plans_file.stem
    print(f"{plans_file} [{args.c}] now starts from {Path(args.checkpoint).resolve()}")
    for message in messages:
        print(message)
    print(f"check it: nnunet-transfer transfer-check -d {args.d} -c {args.c} -tr <trainer> -p {plans}")
    print(f"then train WITHOUT -pretrained_weights: nnUNetv2_train {args.d} {args.c} FOLD -tr <trainer> -p {plans}")
    return 0


def _cmd_transfer_check(args: argparse.Namespace) -> int:
    from nnunet_transfer.transfer.check import transfer_check

    report, mode = transfer_check(args.checkpoint, args.d, args.c, args.tr, plans=args.p,
                                  trusted=args.trust_architecture)
    print(report)
    print(f"path: {mode}")
    if args.o:
        Path(args.o).write_text(json.dumps(report.to_json(), indent=2))
    return 0


def _cmd_extract_encoder(args: argparse.Namespace) -> int:
    from nnunet_transfer.pretrained.source import read_source_weights
    from nnunet_transfer.transfer.encoder_export import extract_encoder
    from nnunet_transfer.transfer.weights import read_state_dict

    source = read_source_weights(args.checkpoint, trusted=args.trust_architecture)  # read once
    path = extract_encoder(source, args.o, strip_prefix=args.strip_prefix, overwrite=args.overwrite,
                           layout=args.layout)
    # count what the file holds, whatever its key names (with --strip-prefix none starts with 'encoder.')
    n = len(read_state_dict(path))
    print(f"wrote {n} encoder tensors of {args.checkpoint} to {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``nnunet-transfer`` parser."""
    p = sub.add_parser("set-pretrained", help="write a pretrained-weights record into a dataset's plans (for "
                                              "partial or foreign checkpoints that -pretrained_weights refuses)")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file (nnU-Net v2 .pth, v1 .model, nnssl, MedicalNet, "
                                                 "state dict, .safetensors) or an nnU-Net results folder / model zip")
    p.add_argument("-d", type=dataset_id, required=True, help="nnU-Net dataset id of the fine-tuning dataset")
    p.add_argument("-c", default="3d_fullres", help="configuration that gets the record (default: 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    p.add_argument("--prefix-map", nargs="+", metavar="OLD=NEW", help="rename checkpoint key prefixes, e.g. =encoder.")
    p.add_argument("--exclude", nargs="*",
                   help="checkpoint key patterns never loaded (default: .seg_layers. controller.)")
    p.add_argument("--min-fraction", type=fraction, default=0.0, help="fail when less of the network is loaded")
    p.add_argument("--description", default=None, help="free text stored in the record")
    p.add_argument("--remove", action="store_true", help="remove the record")
    p.add_argument("--no-adapt", action="store_true", help="load only tensors of equal shape (no kernel, stride, "
                                                           "stage or feature-count adaptation)")
    p.add_argument("--kernel-reduce", choices=["mean", "sum"], default="mean",
                   help="kernel 3 -> 1 along an axis: mean (nnU-Net's rule, default) or sum of the taps")
    p.add_argument("--kernel-grow", choices=["centre", "spread"], default="centre",
                   help="kernel 1 -> 3 along an axis: centre placement (default) or spread")
    p.add_argument("--match-normalisation", action="store_true",
                   help="write plans <PLANS>_<tag> whose intensity normalisation is the one the checkpoint was "
                        "pretrained with (zoo record or the file's own plans), and put the record there; without a "
                        "checkpoint: for the record the plans already hold (e.g. from plan-arch --weights)")
    add_trust_architecture(p)
    p.set_defaults(func=_cmd_set_pretrained)

    p = sub.add_parser("transfer-check", help="dry run: what a checkpoint gives a fine-tuning network (no training)")
    p.add_argument("checkpoint", nargs="?", help="checkpoint (default: the plans' pretrained-weights record)")
    p.add_argument("-d", type=dataset_id, required=True, help="nnU-Net dataset id of the fine-tuning dataset")
    p.add_argument("-c", default="3d_fullres", help="configuration (default: 3d_fullres)")
    p.add_argument("-tr", required=True, help="trainer class that will fine-tune")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    p.add_argument("-o", help="also write the report as JSON")
    add_trust_architecture(p)
    p.set_defaults(func=_cmd_transfer_check)

    p = sub.add_parser("extract-encoder", help="write the encoder (and stem) of a checkpoint as a plain state dict")
    p.add_argument("checkpoint", help="any checkpoint set-pretrained takes (file, results folder or model zip)")
    p.add_argument("-o", required=True, help="output file: .pth/.pt (torch.save of a dict of tensors) or .safetensors")
    p.add_argument("--strip-prefix", action="store_true", help="drop the leading 'encoder.' from the key names")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--layout", choices=("plain", "medicalnet"), default="plain",
                   help="medicalnet: a Med3D ResNet encoder as MedicalNet's files ({'state_dict': {'module.conv1."
                        "weight': ...}}), for plan-arch --weights")
    add_trust_architecture(p)
    p.set_defaults(func=_cmd_extract_encoder)

    from nnunet_transfer.cli.zoo import add_verify_arguments

    p = sub.add_parser("verify-weights", help="alias of `zoo verify`: check a downloaded checkpoint (MedicalNet "
                                              "files key by key) against the zoo's record")
    add_verify_arguments(p)
