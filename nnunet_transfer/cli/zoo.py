"""``nnunet-transfer zoo``: the public pretrained checkpoints (list, show, fetch, verify)."""

from __future__ import annotations

import argparse
import json
import textwrap


def _cmd_list(args: argparse.Namespace) -> int:
    from nnunet_transfer.zoo import list_records

    records = list_records(args.family)
    if args.json:
        print(json.dumps([r.as_dict() for r in records], indent=2))
        return 0
    width = max(len(r.name) for r in records) if records else 4
    print(f"{'name':<{width}}  {'family':<28}  {'architecture':<40}  sha256")
    for r in records:
        digest = r.sha256[:12] + "..." if r.checksum_published else r.sha256
        print(f"{r.name:<{width}}  {r.family:<28}  {r.architecture:<40}  {digest}")
        print(f"{'':<{width}}  cite: {textwrap.shorten(r.citation, 100)}")
    print(f"\n{len(records)} checkpoints; `nnunet-transfer zoo show NAME` for the address, input and fine-tuning "
          "command")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from nnunet_transfer.zoo import get_record

    record = get_record(args.name)
    if args.json:
        print(json.dumps(record.as_dict(), indent=2))
        return 0
    data = record.as_dict()
    inp = data.pop("expected_input")
    rows = [("name", record.name), ("family", record.family), ("description", record.description),
            ("file", record.file_name), ("url", record.url or "none (download from the page)"),
            ("page", record.page), ("size", f"{record.size_bytes} bytes" if record.size_bytes else record.size_note),
            ("sha256", record.sha256 if record.checksum_published else
             "not published: `zoo verify` checks the file's structure only"),
            ("license", record.license), ("citation", record.citation), ("architecture", record.architecture),
            ("format", record.format), ("modality", inp["modality"]),
            ("spacing", f"{inp['spacing']} mm" if inp["spacing"] else "not fixed by the pretraining"),
            ("normalisation", inp["intensity"]), ("fine-tune", record.finetune)]
    for key, value in rows:
        print(f"{key:>13}: {value}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from nnunet_transfer.zoo.fetch import fetch_record
    from nnunet_transfer.transfer.zoo_verify import verify_file

    path = fetch_record(args.name, args.o, progressbar=not args.no_progress)
    print(f"downloaded {path}")
    report = verify_file(path, args.name)
    print(report)
    return 0 if report.ok else 1


def _cmd_verify(args: argparse.Namespace) -> int:
    from nnunet_transfer.transfer.zoo_verify import verify_file

    report = verify_file(args.path, args.record)
    print(report)
    return 0 if report.ok else 1


def add_verify_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo verify`` (also those of its alias ``verify-weights``)."""
    p.add_argument("path", help="the checkpoint file, nnU-Net results folder or zip obtained elsewhere")
    p.add_argument("--record", help="zoo record name (default: the record that releases a file of this name)")
    p.set_defaults(func=_cmd_verify)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``zoo`` and its subcommands to the ``nnunet-transfer`` parser."""
    zoo = sub.add_parser("zoo", help="public pretrained 3D checkpoints: list, show, fetch (resume + checksum), "
                                     "verify")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)

    p = zsub.add_parser("list", help="every record with its family, architecture, checksum and citation")
    p.add_argument("--family", help="only this family (case-insensitive part of its name)")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.set_defaults(func=_cmd_list)

    p = zsub.add_parser("show", help="one record: address, size, checksum, licence, citation, expected input, "
                                     "fine-tuning command")
    p.add_argument("name", help="record name (see `zoo list`) or released file name")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=_cmd_show)

    p = zsub.add_parser("fetch", help="download a record's file (resumes, progress bar, sha256 when published), "
                                      "then verify it")
    p.add_argument("name", help="record name (see `zoo list`)")
    p.add_argument("-o", default=".", help="folder to download into (default: the current folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_fetch)

    p = zsub.add_parser("verify", help="check a file obtained elsewhere against its record (sha256 when published, "
                                       "otherwise its structure)")
    add_verify_arguments(p)
