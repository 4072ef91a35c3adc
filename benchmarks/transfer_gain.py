"""Benchmark: every paper recipe's comparison at demo scale, one after the other, in one report.

Each recipe runs through ``nnunet_transfer.recipes.runner.run_recipe`` (the same code as ``nnunet-transfer recipe
run NAME --scale demo``), every arm with the same data, plans, budget and seeds; ``--epochs``/``--iterations``
override the fine-tuning budget of every recipe (both arms alike). Prints each recipe's table and writes
``transfer_gain.json`` with every recipe's results.

    python benchmarks/transfer_gain.py --workspace /tmp/gain                          # all recipes
    python benchmarks/transfer_gain.py --workspace /tmp/gain --recipes med3d --seeds 0 1 2 --epochs 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from nnunet_transfer.recipes.catalog import RECIPES
from nnunet_transfer.recipes.runner import run_recipe


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True, help="a folder for the runs (one sub-folder per recipe)")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: each recipe's demo seeds")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the recipe's)")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per fine-tuning epoch")
    args = parser.parse_args(argv)
    root = Path(args.workspace).resolve()
    overrides = {k: v for k, v in (("epochs", args.epochs), ("iterations", args.iterations)) if v is not None}
    report = {}
    for name in args.recipes:
        report[name] = run_recipe(name, root / name, "demo", seeds=args.seeds, budget_overrides=overrides)
        (root / "transfer_gain.json").write_text(json.dumps(report, indent=1))
    print(f"results: {root / 'transfer_gain.json'}")


if __name__ == "__main__":
    main()
