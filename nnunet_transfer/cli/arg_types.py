"""argparse types that check ranges where a value enters: every numeric option of every command uses one of these,
so ``convert -np 0``, ``--min-fraction 7`` or a dataset id of 5000 are refused by argparse with one line naming the
option, before any work starts."""

from __future__ import annotations

import argparse
import math
from typing import Callable, Optional

__all__ = ["int_in", "float_in", "positive_int", "non_negative_int", "dataset_id", "seed", "fraction",
           "positive_float", "finite_float", "percentile", "step_size"]


def int_in(low: int, high: Optional[int] = None, what: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (no upper bound when ``high`` is None)."""
    bounds = f">= {low}" if high is None else f"in {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer{f' ({what})' if what else ''}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: give an integer {bounds}"
                                             + (f" ({what})" if what else ""))
        return value

    parse.__name__ = f"integer {bounds}"
    return parse


def float_in(low: float, high: float = math.inf, low_open: bool = False, what: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    bounds = ("" if low == -math.inf else f"{'>' if low_open else '>='} {low:g}") + \
        ("" if high == math.inf else f"{' and ' if low != -math.inf else ''}<= {high:g}")
    bounds = bounds or "that is finite"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a number {bounds}"
                                             + (f" ({what})" if what else ""))
        return value

    parse.__name__ = f"number {bounds}"
    return parse


#: worker processes, cases, epochs ...
positive_int = int_in(1)
#: counts where 0 means "none" (nnU-Net's -npp 0: in the main process)
non_negative_int = int_in(0)
#: nnU-Net dataset ids
dataset_id = int_in(1, 999, "nnU-Net dataset ids are 1..999")
#: random seeds (numpy's range)
seed = int_in(0, 2 ** 32 - 1)
#: a share of something, 0..1
fraction = float_in(0.0, 1.0, what="a fraction: 0.9 means 90 %")
positive_float = float_in(0.0, low_open=True)
#: any finite number (intensity windows)
finite_float = float_in(-math.inf)
#: percentiles, 0..100
percentile = float_in(0.0, 100.0)
#: nnU-Net's sliding-window step, a fraction of the patch size
step_size = float_in(0.0, 1.0, low_open=True, what="a fraction of the patch size")
