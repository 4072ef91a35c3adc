"""Our own warnings as one-line notes on the command line.

The library reports things a caller may want to know but that do not stop the work (a trainer whose code must be
shipped separately, a pickle left out of an installed model) with :func:`warnings.warn`, so Python callers can filter
or escalate them. On the command line Python's default format (``path/to/module.py:312: UserWarning: ...`` plus the
source line) reads like a crash; inside :func:`warnings_as_notes` a warning raised by this package prints as
``note: <message>`` instead. Warnings from other packages keep Python's format.
"""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


@contextmanager
def warnings_as_notes() -> Iterator[None]:
    """Within the block, this package's warnings print as ``note: <message>`` on stderr."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if _PACKAGE_DIR in Path(filename).resolve().parents:
                print(f"note: {message}", file=sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
