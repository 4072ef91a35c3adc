"""``load_checkpoint``'s argument under both of nnU-Net's names.

nnU-Net 2.8.x declares ``nnUNetTrainer.load_checkpoint(self, filename_or_checkpoint)``; its master branch renamed the
argument to ``checkpoint``. nnU-Net itself passes it positionally, but a subclass that overrides the method with one
name breaks callers that use the other. Our trainers override it as ``load_checkpoint(self, *args, **kwargs)``: the
argument is taken under either name (or positionally) and handed to the parent under the parent's own name, read off
its signature, so they work on both nnU-Net versions and below either kind of parent class.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence

#: the argument's name in nnU-Net 2.8.x and in nnU-Net master
CHECKPOINT_ARGUMENT_NAMES = ("filename_or_checkpoint", "checkpoint")

__all__ = ["CHECKPOINT_ARGUMENT_NAMES", "checkpoint_from_call", "call_with_checkpoint"]


def checkpoint_from_call(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """The checkpoint (path or dict) of a ``load_checkpoint`` call, given positionally or under either name."""
    given = list(args) + [kwargs[name] for name in CHECKPOINT_ARGUMENT_NAMES if name in kwargs]
    unknown = set(kwargs) - set(CHECKPOINT_ARGUMENT_NAMES)
    if len(given) != 1 or unknown:
        raise TypeError(f"load_checkpoint takes one checkpoint (positionally or as one of "
                        f"{CHECKPOINT_ARGUMENT_NAMES}), got {len(args)} positional and {sorted(kwargs)} keyword "
                        "arguments")
    return given[0]


def call_with_checkpoint(parent_method: Callable[..., Any], checkpoint: Any) -> Any:
    """Call the parent's (bound) ``load_checkpoint`` with ``checkpoint`` under the name its signature uses."""
    parameters = [p for p in inspect.signature(parent_method).parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if parameters and parameters[0].name in CHECKPOINT_ARGUMENT_NAMES:
        return parent_method(**{parameters[0].name: checkpoint})
    return parent_method(checkpoint)
