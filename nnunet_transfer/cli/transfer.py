"""``nnunet-transfer`` commands. Weight transfer: pretrained-weights records, the dry-run report, encoder extraction and
checkpoint verification."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_set_pretrained(args: argparse.Namespace) -> int:
    from nnunet_transfer.transfer.record import PretrainedRecord, plans_file_of, write_record

    plans_file = plans_file_of(args.d, args.p)
    if args.remove:
        if write_record(plans_file, args.c, None):
            print(f"removed the pretrained-weights record of {args.c} from {plans_file}")
        else:
            print(f"{plans_file} [{args.c}] has no pretrained-weights record: nothing removed")
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
    from nnunet_transfer.transfer.encoder_export import extract_encoder
    from nnunet_transfer.transfer.weights import read_state_dict

    path = extract_encoder(args.checkpoint, args.o, strip_prefix=args.strip_prefix, overwrite=args.overwrite,
                           layout=args.layout)
    # count what the file holds, whatever its key names (with --strip-prefix none starts with 'encoder.')
    n = len(read_state_dict(path))
    print(f"wrote {n} encoder tensors of {args.checkpoint} to {path}")
    return 0


def _cmd_verify_weights(args: argparse.Namespace) -> int:
    from nnunet_transfer.pretrained.registry import verify_checkpoint

    report = verify_checkpoint(args.path, args.record)
    print(report)
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``nnunet-transfer`` parser."""
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

    p = sub.add_parser("verify-weights", help="check a downloaded MedicalNet checkpoint against the registry")
    p.add_argument("path", help="the downloaded checkpoint file (e.g. resnet_10_23dataset.pth)")
    p.add_argument("--record", help="registry record name (default: from the file name)")
    p.set_defaults(func=_cmd_verify_weights)
