"""JSON files we did not write ourselves (an export manifest, a dataset.json, a training's ``transfer_source.json``),
read so that a damaged or hand-edited file ends in one line naming the file and the entry, never in a
``JSONDecodeError``, ``AttributeError`` or ``TypeError`` traceback further down.

:func:`read_json_object` parses the file (size-bounded, :mod:`nnunet_transfer.utils.bounded_io`) and checks that it
is an object; :func:`require_entries` checks the types of
the entries the caller is about to use (``ListOf(str)`` for lists), so the code after it can index them safely.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Tuple, Union

from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.utils.bounded_io import parse_json_bounded, read_json_bounded

__all__ = ["ListOf", "parse_json_object", "read_json_object", "require_entries"]

_JSON_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
                    bool: "true/false", type(None): "null"}


class ListOf:
    """An entry type: a list whose items are all of ``item_type``."""

    def __init__(self, item_type: Union[type, Tuple[type, ...]]) -> None:
        self.item_type = item_type

    def accepts(self, value: Any) -> bool:
        return isinstance(value, list) and all(_is(v, self.item_type) for v in value)

    def __str__(self) -> str:
        return f"a list of {_describe(self.item_type)}"


def _is(value: Any, kind: Union[type, Tuple[type, ...]]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:  # true/false is no number here
        return False
    return isinstance(value, kinds)


def _describe(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_describe(k) for k in kind)
    return str(kind) if isinstance(kind, ListOf) else _JSON_TYPE_NAMES.get(kind, kind.__name__)


def parse_json_object(data: bytes, source: Union[str, Path], fix: str) -> dict:
    """Parse JSON bytes read from ``source`` (bounded, :func:`~nnunet_transfer.utils.bounded_io.parse_json_bounded`);
    :class:`~nnunet_transfer.errors.InvalidValueError` naming ``source`` and ``fix`` when it holds no object."""
    value = parse_json_bounded(data, str(source))
    if not isinstance(value, dict):
        raise InvalidValueError(f"{source} holds {_describe(type(value))}, not a JSON object", file=source, fix=fix)
    return value


def read_json_object(path: Union[str, Path], fix: str) -> dict:
    """Read and parse a JSON object from ``path``, refusing an oversized file before reading it (see
    :func:`parse_json_object`)."""
    value = read_json_bounded(path)
    if not isinstance(value, dict):
        raise InvalidValueError(f"{path} holds {_describe(type(value))}, not a JSON object", file=path, fix=fix)
    return value


def require_entries(data: Mapping[str, Any], entries: Mapping[str, Any], source: Union[str, Path], fix: str) -> None:
    """Check that ``data`` has each of ``entries`` (name -> type, tuple of types or :class:`ListOf`), of that type."""
    for name, kind in entries.items():
        if name not in data:
            raise InvalidValueError(f"{source} has no {name!r} entry", file=source, fix=fix)
        value = data[name]
        ok = kind.accepts(value) if isinstance(kind, ListOf) else _is(value, kind)
        if not ok:
            shown = json.dumps(value)[:80] if isinstance(value, (str, int, float, list, dict, type(None))) else "?"
            raise InvalidValueError(f"{source}: {name!r} is {shown}, expected {_describe(kind)}", file=source, fix=fix)
