"""The learning-rate schedules of our trainers, stepped the way nnU-Net steps its own.

nnU-Net's trainer calls ``lr_scheduler.step(current_epoch)`` once at the start of every epoch (its
``on_train_epoch_start``) and keeps schedulers in ``nnunetv2.training.lr_scheduler`` (``PolyLRScheduler``). Ours follow
that contract and add what the fine-tuning recipes need:

* :class:`WarmupPolyLRScheduler`: linear warm-up, then nnU-Net's poly decay (every :class:`FineTuneTrainer
  <nnunet_transfer.trainers.finetune.FineTuneTrainer>`); honours a per-parameter-group ``lr_scale``, so the
  pretrained parameters can run at a fraction of the new ones' rate. The schedules below derive from it.
* :class:`ExponentialLRScheduler`: MedicalNet's ``ExponentialLR(0.99)`` per epoch (``Med3DFinetuneTrainer``).
* :class:`StepDecayLRScheduler`: divide by 10 every N iterations (MLEAM's paper schedule, ``MLEAMTrainer_paper``).
* :class:`InverseTimeDecayLRScheduler`: ``initial_lr / (1 + decay * epoch)`` (MLEAM's pretraining,
  ``MLEAMPretrainTrainer``).
* :class:`PlateauLRScheduler`: reduce on a plateau of the validation Dice (``AttentionUNetTrainer``).

``LocalizationPretrainTrainer`` uses nnU-Net's own ``PolyLRScheduler`` unchanged.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["WarmupPolyLRScheduler", "ExponentialLRScheduler", "StepDecayLRScheduler", "InverseTimeDecayLRScheduler",
           "PlateauLRScheduler"]


class WarmupPolyLRScheduler(torch.optim.lr_scheduler._LRScheduler):
    """Linear warm-up over ``warmup_steps`` epochs, then nnU-Net's poly decay; honours a per-group ``lr_scale``.

    The learning rate of epoch ``step`` is ``initial_lr * factor(step)`` (times the group's ``lr_scale``):
    ``(step + 1) / (warmup_steps + 1)`` during the warm-up, then :meth:`decay` of the epochs since its end, which
    the other schedules override.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, max_steps: int, warmup_steps: int = 0,
                 exponent: float = 0.9):
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.warmup_steps = warmup_steps
        self.exponent = exponent
        self.ctr = 0
        super().__init__(optimizer, -1)

    def factor(self, step: int) -> float:
        """Multiplier of ``initial_lr`` in epoch ``step``: the linear warm-up, then :meth:`decay`."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        return self.decay(step - self.warmup_steps)

    def decay(self, steps_after_warmup: int) -> float:
        """nnU-Net's poly decay ``(1 - s / (max_steps - warmup_steps)) ** exponent``, at least 0."""
        decay_steps = max(1, self.max_steps - self.warmup_steps)
        return max(0.0, 1 - steps_after_warmup / decay_steps) ** self.exponent

    def step(self, current_step: Optional[int] = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.initial_lr * self.factor(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


class ExponentialLRScheduler(WarmupPolyLRScheduler):
    """``initial_lr * gamma ** (epoch + 1)`` per epoch (after the linear warm-up), honouring ``lr_scale`` groups.

    MedicalNet's ``train.py`` calls ``ExponentialLR(gamma=0.99).step()`` at the start of every epoch, before
    training it, so its first epoch already runs at ``gamma`` times the base rate; hence the ``+ 1``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, gamma: float = 0.99,
                 warmup_steps: int = 0):
        if not 0 < gamma <= 1:
            raise ValueError(f"ExponentialLRScheduler: gamma must be in (0, 1], got {gamma}")
        self.gamma = gamma
        super().__init__(optimizer, initial_lr, max_steps=0, warmup_steps=warmup_steps)

    def decay(self, steps_after_warmup: int) -> float:
        return self.gamma ** (steps_after_warmup + 1)


class StepDecayLRScheduler(WarmupPolyLRScheduler):
    """Learning rate ``initial_lr * gamma ** floor(iterations / step_iterations)``, set per epoch; honours
    ``lr_scale`` groups and the linear warm-up of :class:`WarmupPolyLRScheduler` (epochs after warm-up count)."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, iterations_per_epoch: int,
                 step_iterations: int = 2000, gamma: float = 0.1, warmup_steps: int = 0):
        if iterations_per_epoch < 1 or step_iterations < 1:
            raise ValueError(f"StepDecayLRScheduler: iterations_per_epoch ({iterations_per_epoch}) and "
                             f"step_iterations ({step_iterations}) must be >= 1")
        self.iterations_per_epoch = iterations_per_epoch
        self.step_iterations = step_iterations
        self.gamma = gamma
        super().__init__(optimizer, initial_lr, max_steps=0, warmup_steps=warmup_steps)

    def decay(self, steps_after_warmup: int) -> float:
        iterations = steps_after_warmup * self.iterations_per_epoch
        return self.gamma ** (iterations // self.step_iterations)


class InverseTimeDecayLRScheduler(WarmupPolyLRScheduler):
    """``initial_lr / (1 + decay * epoch)`` per epoch (after the linear warm-up), honouring ``lr_scale`` groups."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, decay: float, warmup_steps: int = 0):
        if decay < 0:
            raise ValueError(f"InverseTimeDecayLRScheduler: decay must be >= 0, got {decay}")
        self.decay_rate = decay
        super().__init__(optimizer, initial_lr, max_steps=0, warmup_steps=warmup_steps)

    def decay(self, steps_after_warmup: int) -> float:
        return 1.0 / (1.0 + self.decay_rate * steps_after_warmup)


class PlateauLRScheduler:
    """ReduceLROnPlateau driven by the trainer's validation Dice, callable the way nnU-Net steps its schedulers.

    nnU-Net calls ``step(epoch)`` at the start of every epoch; this reads the latest EMA pseudo Dice instead.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, metric: Callable[[], Optional[float]], factor: float = 0.5,
                 patience: int = 10, min_lr: float = 1e-7):
        self.optimizer = optimizer
        self.metric = metric
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=factor,
                                                                  patience=patience, min_lr=min_lr)

    def step(self, epoch: Optional[int] = None) -> None:
        value = self.metric()
        if value is not None:
            self.plateau.step(value)
