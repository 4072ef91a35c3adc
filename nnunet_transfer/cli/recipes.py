"""``nnunet-transfer`` commands. The paper recipes (``recipe list|show|run``) and the demo (the kits21-dodnet
comparison on embedded synthetic data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_transfer.cli.arg_types import positive_int, seed
from nnunet_transfer.cli.data import KIDNEY_LESION_CHOICES


def _cmd_demo(args: argparse.Namespace) -> int:
    from nnunet_transfer.recipes.demo import DemoConfig, run_demo

    config = DemoConfig(workspace=Path(args.workspace) if args.workspace else None, mots_cases=args.mots_cases,
                        kidney_cases=args.kidney_cases, kidney_lesions=args.kidney_lesions, jobs=args.jobs,
                        target_cases=tuple(args.target_cases), val_cases=args.val_cases, test_cases=args.test_cases,
                        seeds=tuple(args.seeds), pretrain_epochs=args.pretrain_epochs,
                        pretrain_iterations=args.pretrain_iterations, epochs=args.epochs, iterations=args.iterations,
                        data_seed=args.data_seed, shape=tuple(args.shape), patch_size=tuple(args.patch_size),
                        base_features=args.base_features,
                        max_features=args.max_features)
    run_demo(config)
    return 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    from nnunet_transfer.recipes.catalog import RECIPES, describe, get_recipe

    if args.action == "list":
        for recipe in RECIPES.values():
            arms = " vs ".join(recipe.arm_names)
            print(f"{recipe.name:<16} {recipe.paper}\n{'':<16} compares {arms}; data: "
                  f"{', '.join(s.name for s in recipe.sources)}")
        return 0
    if not args.name:
        raise ValueError(f"recipe {args.action} needs a recipe name: {', '.join(RECIPES)}")
    if args.action == "show":
        print(describe(get_recipe(args.name)))
        return 0
    from nnunet_transfer.recipes.runner import run_recipe

    if not args.workspace:
        raise ValueError("recipe run needs --workspace W (a folder for nnU-Net's data and the results)")
    run_recipe(args.name, Path(args.workspace), args.scale, sources=args.source or (), seeds=args.seeds)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``nnunet-transfer`` parser."""
    from nnunet_transfer.recipes.demo import DemoConfig

    d = DemoConfig()

    p = sub.add_parser("demo", help="MOTS pretraining -> KiTS21 fine-tuning from scratch and pretrained, over seeds, "
                                    "on embedded synthetic data, on CPU")
    p.add_argument("--workspace", help="folder for nnU-Net's data (default: nnUNet_* variables or ./nnunet_workspace)")
    p.add_argument("--mots-cases", type=positive_int, default=d.mots_cases, help="synthetic cases per MOTS source")
    p.add_argument("--kidney-cases", type=positive_int, default=d.kidney_cases,
                   help="synthetic cases of MOTS' kidney source (KiTS19)")
    p.add_argument("--kidney-lesions", choices=KIDNEY_LESION_CHOICES, default=d.kidney_lesions,
                   help="kidney tumours and cysts of the KiTS19 source and the KiTS21 target (see synth)")
    p.add_argument("--jobs", type=positive_int, default=d.jobs,
                   help="trainings run side by side, sharing the CPU cores (1: one after the other)")
    p.add_argument("--target-cases", type=positive_int, nargs="+", default=list(d.target_cases), metavar="N",
                   help="labelled KiTS21 cases per fine-tuning; several numbers (e.g. 2 4 8) give the few-label curve")
    p.add_argument("--val-cases", type=positive_int, default=d.val_cases,
                   help="KiTS21 cases for nnU-Net's validation curves")
    p.add_argument("--test-cases", type=positive_int, default=d.test_cases,
                   help="held-out KiTS21 cases that are scored")
    p.add_argument("--seeds", type=seed, nargs="+", default=list(d.seeds), help="one fine-tuning per seed and side")
    p.add_argument("--pretrain-epochs", type=positive_int, default=d.pretrain_epochs, help="MOTS pretraining epochs")
    p.add_argument("--pretrain-iterations", type=positive_int, default=d.pretrain_iterations,
                   help="iterations per epoch")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help="fine-tuning epochs")
    p.add_argument("--iterations", type=positive_int, default=d.iterations, help="fine-tuning iterations per epoch")
    p.add_argument("--shape", type=positive_int, nargs=3, default=list(d.shape), help="synthetic volume shape z y x")
    p.add_argument("--patch-size", type=positive_int, nargs=3, default=list(d.patch_size),
                   help="patch of the demo plans z y x (a multiple of the network's total stride per axis)")
    p.add_argument("--data-seed", type=seed, default=d.data_seed, help="seed of the synthetic data")
    p.add_argument("--base-features", type=positive_int, default=d.base_features,
                   help="demo plans: features of the first stage (nnU-Net: 32)")
    p.add_argument("--max-features", type=positive_int, default=d.max_features,
                   help="demo plans: feature cap (nnU-Net: 320)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("recipe", help="the five papers as recipes: list them, show a paper's exact command sequence, "
                                      "run it (tiny smoke test, CPU demo on generated data, or the paper's setting)")
    p.add_argument("action", choices=["list", "show", "run"], help="list the recipes, show one, or run one")
    p.add_argument("name", nargs="?", help="recipe name (see `recipe list`)")
    p.add_argument("--workspace", help="run: folder for nnU-Net's data, the logs and recipe_results.json/.md")
    p.add_argument("--scale", choices=["tiny", "demo", "paper"], default="demo",
                   help="run: tiny (smoke test of every step), demo (the comparison on generated data, CPU) or "
                        "paper (the published setting on the real data, GPU)")
    p.add_argument("--source", action="append", metavar="NAME=DIR|ROOT",
                   help="run --scale paper: a source dataset's folder (repeat), or one folder holding them by name")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="run: seeds (default: the recipe's)")
    p.set_defaults(func=_cmd_recipe)
