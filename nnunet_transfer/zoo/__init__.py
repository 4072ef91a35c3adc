"""The model zoo: the public pretrained 3D checkpoints, one record each, and the tools to get and check them.

- :mod:`nnunet_transfer.zoo.record`: what a record holds (:class:`ZooRecord`);
- :mod:`nnunet_transfer.zoo.catalogue`: the records (adding a checkpoint is one entry there);
- :mod:`nnunet_transfer.transfer.zoo_verify` (it needs the networks, so it lives with the transfer code):
  :func:`~nnunet_transfer.transfer.zoo_verify.verify_file`, a file obtained elsewhere
  checked against its record (sha256 when published, otherwise its structure);
- :mod:`nnunet_transfer.zoo.fetch`: :func:`~nnunet_transfer.zoo.fetch.fetch_record`, download with resume, a
  progress bar and checksum verification (pooch).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from nnunet_transfer.errors import MissingEntryError, did_you_mean
from nnunet_transfer.zoo.catalogue import RECORDS
from nnunet_transfer.zoo.record import NOT_PUBLISHED, ExpectedInput, Intensity, ZooRecord

__all__ = ["ZooRecord", "ExpectedInput", "Intensity", "NOT_PUBLISHED", "RECORDS", "list_records", "get_record",
           "find_record_for_file"]


def list_records(family: Optional[str] = None) -> List[ZooRecord]:
    """Every record (of one family when given, case-insensitive substring of the family name)."""
    return [r for r in RECORDS if family is None or family.lower() in r.family.lower()]


def get_record(name: str) -> ZooRecord:
    """The record called ``name``; also accepts a released file name when exactly one record has it."""
    for record in RECORDS:
        if record.name == name:
            return record
    by_file = [r for r in RECORDS if r.file_name == Path(name).name]
    if len(by_file) == 1:
        return by_file[0]
    if len(by_file) > 1:
        raise MissingEntryError(f"several zoo records release a file named {Path(name).name!r}: "
                                f"{', '.join(r.name for r in by_file)}", fix="give the record's name (--record NAME)")
    names = [r.name for r in RECORDS]
    raise MissingEntryError(f"no zoo record named {name!r}{did_you_mean(name, names)}",
                            fix="`nnunet-transfer zoo list` shows every record")


def find_record_for_file(path: str | Path) -> Optional[ZooRecord]:
    """The record a file's name identifies, or None (unknown name, or a name several records release)."""
    try:
        return get_record(Path(path).name)
    except MissingEntryError:
        return None
