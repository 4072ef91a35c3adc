"""The one exception the dataset converters raise for problems with the user's data or settings.

A converter checks every case before it gives up, so a single :class:`ConversionError` lists *all* problems
it found (missing files, unreadable files, bad label values, geometry mismatches, ...), each naming the file
concerned and saying how to fix it. That way a user fixes the source tree once instead of once per problem.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Union

from nnunet_transfer.errors import NnUNetTransferError


class ConversionError(NnUNetTransferError, RuntimeError):
    """A dataset could not be converted; :attr:`problems` lists every problem found (one line each).

    When it is raised nothing has been written to ``nnUNet_raw``: the staging folder was removed and any
    dataset that was there before is untouched.
    """

    def __init__(self, problems: Union[str, Sequence[str]], header: str = "Dataset conversion failed") -> None:
        self.problems: List[str] = [problems] if isinstance(problems, str) else list(problems)
        self.header = header
        super().__init__(self._format())

    def _format(self) -> str:
        if len(self.problems) == 1:
            return f"{self.header}: {self.problems[0]}"
        lines = [f"{self.header}: {len(self.problems)} problems found:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def raise_if_problems(problems: Iterable[str], header: str = "Dataset conversion failed") -> None:
    """Raise one :class:`ConversionError` listing all ``problems`` (no-op when there are none)."""
    problems = list(problems)
    if problems:
        raise ConversionError(problems, header)
