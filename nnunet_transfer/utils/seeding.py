"""One call that fixes every random number generator a CPU nnU-Net training draws from.

nnU-Net 2.8 seeds nothing itself: network initialisation (torch), patch sampling (numpy's global generator in
``nnUNetDataLoader``) and augmentation (batchgeneratorsv2: torch and numpy; ``random`` in a few transforms) all use
the global generators. With augmentation in the main process (``nnUNet_n_proc_DA=0``) seeding these three before
the trainer builds anything makes a training reproducible: same seed, same weights, same numbers.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and, when present, CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
