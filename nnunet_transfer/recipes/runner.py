"""``nnunet-transfer recipe run``: run a recipe of the catalogue at a scale, step by step, and write its results.

* ``tiny`` / ``demo``: the comparison of :mod:`nnunet_transfer.recipes.comparisons` at the catalogue's budget, on
  generated data in the paper's layout;
* ``paper``: the published command sequence (:attr:`Recipe.steps`) on the real data given with ``--source``, after a
  check that every source is there (what is missing and where to get it otherwise).

Every command runs as a subprocess in the workspace's environment (nnU-Net's folders inside the workspace) with a
progress line per step; a failing step stops the run with the step, the command and the end of its output. The
results (``recipe_results.json`` and ``recipe_results.md``) are written only when every step has succeeded, each
atomically: a failed run leaves no results of its own.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.recipes.catalog import SCALES, Recipe, fill, get_recipe
from nnunet_transfer.utils.atomic import write_atomically
from nnunet_transfer.workspace import CommandFailed, NnUNetWorkspace, nnunet_command

RESULTS_JSON, RESULTS_MD = "recipe_results.json", "recipe_results.md"


class RecipeWorkspace(NnUNetWorkspace):
    """A workspace that prints one progress line per command it runs."""

    def __init__(self, root: Path, label: str):
        super().__init__(root)
        self.label, self.step, self.started = label, 0, time.time()
        self.current = ""

    def run(self, args: Sequence[str], *a, **kw) -> str:
        self.step += 1
        self.current = _short(args)
        print(f"[{self.label} step {self.step} | {time.time() - self.started:5.0f} s] {self.current}", flush=True)
        return super().run(args, *a, **kw)


def _short(args: Sequence[str]) -> str:
    """A command as the user would type it (``nnunet-transfer ...``, ``nnUNetv2_train ...``)."""
    words = [str(a) for a in args]
    if words[:3] == [sys.executable, "-m", "nnunet_transfer.cli.main"]:
        words = ["nnunet-transfer"] + words[3:]
    elif words:
        words[0] = Path(words[0]).name
    return " ".join(shlex.quote(w) for w in words)


# ---------------------------------------------------------------------------------------------------- sources


def resolve_sources(recipe: Recipe, given: Sequence[str]) -> Dict[str, Path]:
    """``--source`` entries: ``NAME=DIR`` for one source, or a ``ROOT`` folder holding one folder per source name."""
    names = [s.name for s in recipe.sources]
    resolved: Dict[str, Path] = {}
    for entry in given:
        name, sep, folder = entry.partition("=")
        if sep:
            if name not in names:
                raise NnUNetTransferError(f"--source {entry}: recipe {recipe.name} has no source {name!r}",
                                          fix=f"name one of: {', '.join(names)}")
            resolved[name] = Path(folder).expanduser().resolve()
        else:
            root = Path(entry).expanduser().resolve()
            for n in names:
                resolved.setdefault(n, root / n)
    return resolved


def check_sources(recipe: Recipe, sources: Mapping[str, Path]) -> List[str]:
    """What is missing, one line per problem, each with where to get the data (empty: all there)."""
    problems = []
    for source in recipe.sources:
        folder = sources.get(source.name)
        where = f"get it from {source.url}" + (f"; layout: {source.how}" if source.how else "")
        if folder is None:
            problems.append(f"{source.name} ({source.what}): not given; pass --source {source.name}=DIR; {where}")
            continue
        if not folder.is_dir():
            problems.append(f"{source.name}: {folder} is not a folder ({source.what}); {where}")
            continue
        missing = [pattern for pattern in source.expect if not any(folder.glob(pattern))]
        if missing:
            problems.append(f"{source.name}: {folder} has nothing matching {', '.join(missing)} ({source.what}); "
                            f"{where}")
    return problems


# ---------------------------------------------------------------------------------------------------- running


def _paper_command(words: List[str]) -> List[str]:
    if words[0] == "nnunet-transfer":
        return [sys.executable, "-m", "nnunet_transfer.cli.main", *words[1:]]
    if words[0].startswith("nnUNetv2_"):
        return [nnunet_command(words[0]), *words[1:]]
    return words


def run_paper_steps(recipe: Recipe, ws: RecipeWorkspace, sources: Mapping[str, Path]) -> Dict[str, Dict[str, list]]:
    """The published sequence, then each arm's scores from the files its evaluation steps wrote."""
    source_text = {k: str(v) for k, v in sources.items()}
    (ws.root / "eval").mkdir(exist_ok=True)
    for step in recipe.steps:
        command = fill(step.command, str(ws.root), source_text)
        if step.manual:
            print(f"[{ws.label}] manual step, not run: {step.title}\n    {command}", flush=True)
            continue
        if step.title:
            print(f"[{ws.label}] {step.title}", flush=True)
        for part in command.split(" && "):
            ws.run(_paper_command(shlex.split(part)))
    if not recipe.evaluations:
        raise NnUNetTransferError(f"recipe {recipe.name} at paper scale ends with the trainings: its comparison "
                                  "depends on your own data (see `recipe show`), so no table is written")
    runs: Dict[str, Dict[str, list]] = {}
    for evaluation in recipe.evaluations:
        scores = json.loads(Path(fill(evaluation.path, str(ws.root))).read_text())
        runs.setdefault(evaluation.condition, {})[evaluation.arm] = [
            {"seed": "nnU-Net default (unseeded)", "mean": _read_scores(recipe, scores, evaluation.reader)}]
    return runs


def _read_scores(recipe: Recipe, scores: dict, reader: str) -> dict:
    """``{structure: {metric: value}}`` from ``evaluate kits21`` or ``nnUNetv2_evaluate_folder`` output."""
    if reader == "kits21":
        return scores["mean"]
    # nnU-Net's summary.json: foreground_mean {Dice, IoU, ...}; the table's structure gets the foreground mean
    mean = scores["foreground_mean"]
    return {structure: {"dice": mean["Dice"], "iou": mean["IoU"]} for structure, _, _ in recipe.columns}


def run_recipe(name: str, workspace: Path, scale: str, sources: Sequence[str] = (),
               seeds: Optional[Sequence[int]] = None, budget_overrides: Optional[Mapping[str, object]] = None) -> dict:
    """Run recipe ``name`` at ``scale`` in ``workspace``; returns the results also written there.
    ``budget_overrides`` replace entries of the scale's budget (tiny/demo), for every arm alike."""
    from nnunet_transfer.recipes.comparisons import COMPARISONS
    from nnunet_transfer.recipes.results import markdown_table, summarise

    recipe = get_recipe(name)
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; scales: {', '.join(SCALES)}")
    workspace = Path(workspace).expanduser().resolve()
    started = time.time()
    if scale == "paper":
        resolved = resolve_sources(recipe, sources)
        problems = check_sources(recipe, resolved)
        if problems:
            raise NnUNetTransferError(f"recipe {name} at paper scale: the data is not complete:\n  - "
                                      + "\n  - ".join(problems),
                                      fix=f"see `nnunet-transfer recipe show {name}` for every dataset and step")
    ws = RecipeWorkspace(workspace, f"recipe {name} ({scale})")
    if scale != "paper":  # tiny generated datasets: nnU-Net's default of 8 worker processes per step costs more
        ws.env["nnUNet_def_n_proc"] = "1"  # than it saves (each imports torch)
    chosen = tuple(seeds) if seeds else tuple(recipe.seeds.get(scale, ()))
    print(f"[recipe {name}] {recipe.paper}\n[recipe {name}] scale {scale}, workspace {ws.root}, arms "
          f"{', '.join(recipe.arm_names)}, seeds {list(chosen) or 'the demo default'}; log of every command: "
          f"{ws.log_file}", flush=True)
    try:
        if scale == "paper":
            runs = run_paper_steps(recipe, ws, resolved)
            budget: Mapping = {"steps": [fill(s.command) for s in recipe.steps]}
        else:
            budget = dict(recipe.scales[scale], **(budget_overrides or {}))
            runs = COMPARISONS[name](ws, chosen, budget)
    except CommandFailed as e:
        where = f"step {ws.step}: {ws.current}" if ws.step else "a step of the demo pipeline"
        raise NnUNetTransferError(f"recipe {name} ({scale}) stopped at {where}\n{e}",
                                  file=ws.log_file, fix=f"the full output is in {ws.log_file}; no results were "
                                                        "written for this run") from e
    summary = summarise(recipe, runs)
    table = markdown_table(recipe, summary)
    used = sorted({r["seed"] for arms in runs.values() for arm in arms.values() for r in arm}, key=str)
    results = {"recipe": name, "paper": recipe.paper, "scale": scale, "seeds": used,
               "arms": dict(recipe.arms), "baseline": recipe.arm_names[0], "budget": _jsonable(budget),
               "runs": runs, "summary": summary, "wall_seconds": round(time.time() - started, 1)}
    write_atomically(ws.root / RESULTS_JSON, lambda tmp: tmp.write_text(json.dumps(results, indent=1)))
    header = (f"# {recipe.paper}: {name} at {scale} scale\n\n{recipe.summary}\n\nSame budget for every arm: "
              f"{json.dumps(_jsonable(budget)) if scale != 'paper' else 'the published setting'}\n\n")
    write_atomically(ws.root / RESULTS_MD, lambda tmp: tmp.write_text(header + table + "\n"))
    print(f"\n{table}\n\nresults: {ws.root / RESULTS_JSON}, {ws.root / RESULTS_MD} "
          f"({results['wall_seconds'] / 60:.1f} min)", flush=True)
    return results


def _jsonable(value):
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
