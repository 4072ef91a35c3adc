"""nnU-Net dataset classes that report each loaded case, so a multi-task trainer can condition its network on the
case's task (DoDNet's evaluation: each case predicted with its own task's head only).

nnU-Net picks the dataset class of a trainer in ``initialize`` (``self.dataset_class = infer_dataset_class(...)``,
blosc2 or numpy by the files of the preprocessed folder) and instantiates it wherever it needs cases: the data
loaders of ``get_dataloaders`` and the final validation, which loads one case, predicts it with the sliding window,
then loads the next. :func:`task_conditioned_dataset_class` maps nnU-Net's choice to its subclass here, which the
trainer sets as its ``dataset_class``; these are plain module-level classes (picklable for nnU-Net's background
loaders). Their ``load_case`` tells the listener of :func:`on_case_loaded`, if one is active in this thread of
control, which case it loaded; without a listener (training batches, other processes) they are nnU-Net's classes.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, Optional

from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, nnUNetDatasetNumpy

__all__ = ["TaskConditionedDatasetBlosc2", "TaskConditionedDatasetNumpy", "task_conditioned_dataset_class",
           "on_case_loaded"]

_case_listener: ContextVar[Optional[Callable[[str], None]]] = ContextVar("case_listener", default=None)


class _ReportsLoadedCases:
    def load_case(self, identifier: str):
        loaded = super().load_case(identifier)  # type: ignore[misc]
        listener = _case_listener.get()
        if listener is not None:
            listener(identifier)
        return loaded


class TaskConditionedDatasetBlosc2(_ReportsLoadedCases, nnUNetDatasetBlosc2):
    """nnU-Net's blosc2 dataset that reports each loaded case (see the module docstring)."""


class TaskConditionedDatasetNumpy(_ReportsLoadedCases, nnUNetDatasetNumpy):
    """nnU-Net's numpy dataset that reports each loaded case (see the module docstring)."""


_SUBCLASSES = {nnUNetDatasetBlosc2: TaskConditionedDatasetBlosc2, nnUNetDatasetNumpy: TaskConditionedDatasetNumpy}


def task_conditioned_dataset_class(nnunet_class: type) -> type:
    """Our subclass of the dataset class nnU-Net chose (itself when it is already one of ours)."""
    if nnunet_class in _SUBCLASSES.values():
        return nnunet_class
    try:
        return _SUBCLASSES[nnunet_class]
    except KeyError:
        raise TypeError(f"no task-conditioned variant of nnU-Net's dataset class {nnunet_class.__name__}; known: "
                        f"{', '.join(c.__name__ for c in _SUBCLASSES)}") from None


@contextmanager
def on_case_loaded(listener: Callable[[str], None]) -> Iterator[None]:
    """Inside the block, every case a task-conditioned dataset loads is passed to ``listener`` (its identifier)."""
    token = _case_listener.set(listener)
    try:
        yield
    finally:
        _case_listener.reset(token)
