"""A recipe run's scores: mean +- SD over seeds per arm, paired (same seed) differences against the baseline arm,
and the markdown table in the paper's own format."""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

from nnunet_transfer.recipes.catalog import Recipe
from nnunet_transfer.recipes.demo import mean_sd, verdict

Runs = Mapping[str, Mapping[str, Sequence[dict]]]


def summarise_arms(runs: Mapping[str, Sequence[dict]], arms: Sequence[str], structure: str, metric: str) -> dict:
    """``{arm: (mean, sd)}``, ``differences: {arm: (mean, sd)}`` (arm - baseline = ``arms[0]``, over the seeds both
    ran) and ``seeds``, for one structure and metric. ``runs[arm]`` is a list of ``{"seed", "mean"}``."""
    by_seed = {arm: {r["seed"]: r["mean"][structure][metric] for r in runs[arm]
                     if structure in r["mean"] and metric in r["mean"][structure]} for arm in arms if arm in runs}
    out: Dict[str, object] = {arm: mean_sd(list(v.values())) for arm, v in by_seed.items() if v}
    baseline = arms[0]
    differences = {}
    for arm in arms[1:]:
        seeds = sorted(set(by_seed.get(baseline, {})) & set(by_seed.get(arm, {})))
        if seeds:
            differences[arm] = mean_sd([by_seed[arm][s] - by_seed[baseline][s] for s in seeds])
    out["differences"] = differences
    out["seeds"] = sorted(set().union(*[set(v) for v in by_seed.values()])) if by_seed else []
    return out


def summarise(recipe: Recipe, runs: Runs) -> Dict[str, Dict[str, dict]]:
    """Per condition and table column (``structure/metric``): :func:`summarise_arms`."""
    return {condition: {f"{s}/{m}": summarise_arms(arm_runs, recipe.arm_names, s, m) for s, m, _ in recipe.columns}
            for condition, arm_runs in runs.items()}


def _cell(value: Sequence[float] | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    mean, sd = value
    return f"{mean:+.3f} +- {sd:.3f}" if signed else f"{mean:.3f} +- {sd:.3f}"


def markdown_table(recipe: Recipe, summary: Mapping[str, Mapping[str, dict]]) -> str:
    """The comparison as the paper reports it (see ``Recipe.table``); mean +- SD over seeds, paired differences."""
    arms, labels = recipe.arm_names, dict(recipe.arms)
    baseline = arms[0]
    lines: List[str] = []
    if recipe.table == "few-label":
        head = ["labelled cases"] + [f"{title} {arm}" for arm in arms for _, _, title in recipe.columns] + \
               [f"paired diff {arm} - {baseline}" for arm in arms[1:] for _ in recipe.columns]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for condition in sorted(summary, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else c)):
            cols = summary[condition]
            row = [condition] + [_cell(cols[f"{s}/{m}"].get(arm)) for arm in arms for s, m, _ in recipe.columns] + \
                  [_cell(cols[f"{s}/{m}"]["differences"].get(arm), True) for arm in arms[1:]
                   for s, m, _ in recipe.columns]
            lines.append("| " + " | ".join(row) + " |")
    else:
        for condition, cols in summary.items():
            head = ["arm"] + [title for _, _, title in recipe.columns]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for arm in arms:
                lines.append("| " + " | ".join([f"{arm}: {labels[arm]}"] + [_cell(cols[f"{s}/{m}"].get(arm))
                                                                           for s, m, _ in recipe.columns]) + " |")
            for arm in arms[1:]:
                lines.append("| " + " | ".join([f"paired diff {arm} - {baseline}"] + [
                    _cell(cols[f"{s}/{m}"]["differences"].get(arm), True) for s, m, _ in recipe.columns]) + " |")
    first = next(iter(summary.values()), {})
    column = next(iter(first.values()), {})
    lines.append("")
    lines.append(f"mean +- SD over seeds {column.get('seeds', [])}; paired diff = arm - {baseline}, same seed")
    for arm in arms[1:]:
        d = column.get("differences", {}).get(arm)
        if d is not None:
            lines.append(f"{arm} vs {baseline} ({recipe.columns[0][2]}): {verdict(tuple(d), len(column['seeds']))}")
    return "\n".join(lines)
