"""nnU-Net's progress plot, per region: the validation Dice of every region, named, in ``progress_per_region.png``.

nnU-Net logs the pseudo Dice of each region every epoch (``dice_per_class_or_region``) but only plots their mean.
For multi-task pretraining the mean hides which task learns and which does not, so after nnU-Net has drawn its usual
figure (``on_epoch_end``) :func:`plot_region_dice` draws one curve per region, read through nnU-Net's logger API,
into a figure of its own next to nnU-Net's ``progress.png``. A separate, small figure costs a fraction of a second
per epoch; re-compositing nnU-Net's 3000 x 5400 pixel ``progress.png`` cost seconds. nnU-Net's logger and figure are
untouched: the logged values and the checkpoint format are nnU-Net's own, so checkpoints stay loadable by stock
nnU-Net.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


#: file written next to nnU-Net's progress.png
REGION_PROGRESS_FILE = "progress_per_region.png"


def plot_region_dice(output_folder: str, history: List[Optional[Sequence[float]]],
                     region_names: Sequence[str]) -> Optional[str]:
    """Draw the validation Dice of every region per epoch (``history``: nnU-Net's logged
    ``dice_per_class_or_region``, one row per epoch) into ``output_folder/progress_per_region.png``; returns the
    path (None when there is nothing to draw yet). The file is replaced atomically."""
    if not history:
        return None
    per_epoch = np.array([[np.nan if v is None else v for v in row] for row in history], dtype=float)
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    cmap = plt.get_cmap("tab20")
    for i in range(per_epoch.shape[1]):
        name = region_names[i] if i < len(region_names) else f"region {i + 1}"
        ax.plot(range(per_epoch.shape[0]), per_epoch[:, i], color=cmap(i % 20), marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation pseudo Dice per region")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    fig.tight_layout()
    path = os.path.join(output_folder, REGION_PROGRESS_FILE)
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
