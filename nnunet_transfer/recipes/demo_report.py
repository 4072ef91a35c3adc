"""The demo's report: mean +- sd over seeds, paired differences and their verdict, the printed tables, the plots.

Kept apart from :mod:`nnunet_transfer.recipes.demo` (which runs the pipeline) so that the figures' arithmetic can be
read and tested on its own.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

MODELS = ("scratch", "pretrained")
#: below this held-out kidney_and_mass Dice a fine-tuning counts as "has not found the kidneys"
NOT_LEARNED_DICE = 0.1
#: a paired Dice difference smaller than this is never called a clear gain, however small its spread
MIN_CLEAR_GAIN = 0.02


# ---------------------------------------------------------------------------------------------------- statistics


def mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: Dict[str, List[dict]], metric: str = "dice") -> Dict[str, dict]:
    """Per structure (HEC): mean +- sd of both models over seeds and of the paired (same seed) differences.

    ``runs[model]`` is a list of ``{"seed", "mean": {structure: {metric: value}}}`` (``evaluate kits21``'s ``mean``).
    """
    by_seed = {m: {r["seed"]: r for r in runs[m]} for m in MODELS}
    seeds = sorted(set(by_seed["scratch"]) & set(by_seed["pretrained"]))
    out = {}
    for hec in runs["scratch"][0]["mean"]:
        values = {m: [by_seed[m][s]["mean"][hec][metric] for s in seeds] for m in MODELS}
        diffs = [p - s for p, s in zip(values["pretrained"], values["scratch"])]
        out[hec] = {m: mean_sd(values[m]) for m in MODELS}
        out[hec]["difference"] = mean_sd(diffs)
        out[hec]["seeds"] = len(seeds)
    return out


def verdict(difference: Tuple[float, float], seeds: int) -> str:
    """Words for a paired difference: a gain is called clear only when it is large against its spread."""
    mean, sd = difference
    if seeds < 2:
        return "one seed: no spread to judge against"
    if sd == 0.0:
        return "gain" if mean > 0 else "no gain"
    t = mean / (sd / seeds ** 0.5)
    if 0 < mean < MIN_CLEAR_GAIN:
        return f"gain below {MIN_CLEAR_GAIN} Dice: negligible"
    if t >= 3 and mean >= 2 * sd:
        return "clear gain (larger than the spread)"
    if mean > 0:
        return "gain small against the spread between seeds"
    return "no gain"


def comparison_table(summary: Dict[str, dict], metric_name: str = "Dice") -> str:
    """One row per HEC: scratch, pretrained (mean +- sd over seeds), paired difference and its verdict."""
    head = f"{'structure':<17}{'scratch ' + metric_name:>18}{'pretrained ' + metric_name:>21}{'paired diff':>18}   verdict"
    rows = [head]
    for hec, s in summary.items():
        cells = "".join(f"{s[m][0]:>12.3f} +- {s[m][1]:.3f}" for m in MODELS)
        d = s["difference"]
        rows.append(f"{hec:<17}{cells}{d[0]:>+11.3f} +- {d[1]:.3f}   {verdict(d, s['seeds'])}")
    return "\n".join(rows)


def per_seed_lines(runs: Dict[str, List[dict]]) -> str:
    """Per HEC and model, the Dice of every seed (and, for kidney_and_mass, how many never found the kidneys)."""
    lines = [f"per seed ({', '.join(str(r['seed']) for r in runs['scratch'])}):"]
    for hec in runs["scratch"][0]["mean"]:
        for model in MODELS:
            values = [r["mean"][hec]["dice"] for r in runs[model]]
            note = ""
            if hec == "kidney_and_mass":
                stuck = sum(v < NOT_LEARNED_DICE for v in values)
                note = f"   ({stuck} of {len(values)} below {NOT_LEARNED_DICE}: not found the kidneys)"
            lines.append(f"  {hec:<16} {model:<10} {' / '.join(f'{v:.3f}' for v in values)}{note}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- plots


def _validation_curve(fold_folder: Path, region: int = 0) -> List[float]:
    """nnU-Net's per-epoch validation pseudo Dice of one region (0: kidney_and_mass), from the checkpoint's log.

    (nnU-Net's EMA of the mean over all regions lags by several epochs and mixes in the tumour, which short runs
    do not learn; the raw per-region value shows when a model starts to find the kidneys.)
    """
    from nnunet_transfer.pretrained.safe_load import read_checkpoint_file

    checkpoint = read_checkpoint_file(fold_folder / "checkpoint_final.pth")
    return [float(v[region]) for v in checkpoint["logging"]["dice_per_class_or_region"]]


def _plot_curves(curves: Dict[str, List[List[float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (label, runs), colour in zip(curves.items(), ("tab:blue", "tab:orange")):
        n = min(len(r) for r in runs)
        values = np.array([r[:n] for r in runs])
        x = np.arange(1, n + 1)
        for i, run in enumerate(values):  # every seed, so the spread (and its shape) is visible
            ax.plot(x, run, color=colour, linewidth=1, alpha=0.45, label=f"{label}, each seed" if i == 0 else None)
        ax.plot(x, values.mean(0), color=colour, marker="o", linewidth=2.5, label=f"{label}, mean of {len(runs)}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation pseudo Dice, kidney_and_mass")
    ax.set_title(title)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_few_label_curve(curve: Dict[int, Dict[str, dict]], path: Path, hec: str = "kidney_and_mass") -> None:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ns = sorted(curve)
    for model in MODELS:
        means = [curve[n][hec][model][0] for n in ns]
        sds = [curve[n][hec][model][1] for n in ns]
        ax.errorbar(ns, means, yerr=sds, marker="o", capsize=4, linewidth=2, label=model)
    ax.set_xlabel("labelled KiTS21 cases in the fine-tuning")
    ax.set_ylabel(f"{hec} Dice on the held-out cases (mean +- sd)")
    ax.set_xticks(ns)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("MOTS -> KiTS21: Dice against labelled target cases")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
