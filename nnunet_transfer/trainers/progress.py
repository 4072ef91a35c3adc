"""nnU-Net's progress plot with one more panel: the validation Dice of every region, named.

nnU-Net logs the pseudo Dice of each region every epoch (``dice_per_class_or_region``) but only plots their mean.
For multi-task pretraining the mean hides which task learns and which does not, so after nnU-Net has drawn its usual
figure (``on_epoch_end``) :func:`add_region_dice_panel` appends a panel with one curve per region, read through
nnU-Net's logger API. nnU-Net's logger itself is untouched: the logged values and the checkpoint format are nnU-Net's
own, so checkpoints stay loadable by stock nnU-Net.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def add_region_dice_panel(output_folder: str, history: List[Optional[Sequence[float]]],
                          region_names: Sequence[str]) -> None:
    """Append to nnU-Net's ``progress.png`` in ``output_folder`` a panel with the validation Dice of every region
    per epoch (``history``: nnU-Net's logged ``dice_per_class_or_region``, one row per epoch)."""
    path = os.path.join(output_folder, "progress.png")
    if not history or not os.path.isfile(path):
        return
    base = plt.imread(path)
    per_epoch = np.array([[np.nan if v is None else v for v in row] for row in history], dtype=float)
    height_in, width_in = base.shape[0] / 100, base.shape[1] / 100
    panel_in = width_in * 0.6
    fig = plt.figure(figsize=(width_in, height_in + panel_in), dpi=100)
    grid = fig.add_gridspec(2, 1, height_ratios=[height_in, panel_in], hspace=0.02)
    top = fig.add_subplot(grid[0])
    top.imshow(base)
    top.axis("off")
    ax = fig.add_subplot(grid[1])
    cmap = plt.get_cmap("tab20")
    for i in range(per_epoch.shape[1]):
        name = region_names[i] if i < len(region_names) else f"region {i + 1}"
        ax.plot(range(per_epoch.shape[0]), per_epoch[:, i], color=cmap(i % 20), linewidth=4, marker="o", label=name)
    ax.set_xlabel("epoch", fontsize=30)
    ax.set_ylabel("pseudo dice per region", fontsize=30)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=24)
    ax.legend(loc="upper left", fontsize=22, ncol=3)
    fig.savefig(path)
    plt.close(fig)
