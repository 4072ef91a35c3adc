"""Options shared by the commands that read models from elsewhere (plans.json, results folders, model zips)."""

from __future__ import annotations

import argparse

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.utils.bounded_io import DEFAULT_MAX_MEMBER_BYTES


def add_trust_architecture(p: argparse.ArgumentParser) -> None:
    """``--trust-architecture NAME`` (repeatable): a class name outside the allow-list that a foreign plans.json may
    make nnU-Net import and build."""
    p.add_argument("--trust-architecture", action="append", default=[], metavar="NAME",
                   help="allow this dotted class name in a foreign plans.json (network class or one of its "
                        "_kw_requires_import building blocks); only for code you trust, repeatable")


def add_max_member_gb(p: argparse.ArgumentParser) -> None:
    """``--max-member-gb GB``: the most one zip member may inflate to."""
    p.add_argument("--max-member-gb", type=float, default=DEFAULT_MAX_MEMBER_BYTES / (1 << 30), metavar="GB",
                   help=f"refuse a zip member that inflates to more than this (default: "
                        f"{DEFAULT_MAX_MEMBER_BYTES / (1 << 30):g} GiB)")


def max_member_bytes(args: argparse.Namespace) -> int:
    """``--max-member-gb`` in bytes; refuses values that are not positive."""
    if not args.max_member_gb > 0:
        raise NnUNetTransferError(f"--max-member-gb must be positive, got {args.max_member_gb}",
                                  fix="give the limit in GiB, e.g. --max-member-gb 16")
    return int(args.max_member_gb * (1 << 30))
