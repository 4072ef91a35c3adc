"""Rules that make a pretrained tensor fit a network planned differently (the target's own plans).

nnU-Net plans differ between datasets in kernel sizes, pooling strides, stage count and feature caps. These pure
functions turn a checkpoint tensor into one of the target's shape and say which rule they used; the transfer path
(:func:`nnunet_transfer.transfer.weights.transfer_weights`) applies them to every tensor whose shape differs and
reports the note. A tensor no rule fits is left at its initialisation and reported with the reason.

Rules (each one per spatial axis or channel dimension):

- **convolution kernel shrinks to 1** (``(3,3,3) -> (1,3,3)``): ``mean`` over the removed taps (nnU-Net master's
  rule for nnssl checkpoints, the default) or ``sum`` (the same response on inputs constant along that axis; the
  mean gives that response divided by the kernel size, which the instance norm after every nnU-Net convolution
  removes). Other shrinks (5 -> 3) keep the centre taps.
- **convolution kernel grows** (``(1,3,3) -> (3,3,3)``): ``centre`` placement (zeros around: the same response on
  every input, the default) or ``spread`` (the taps repeated and divided by the growth: the same response on inputs
  constant along that axis).
- **transposed convolution of another stride** (kernel = stride in nnU-Net): a smaller stride averages the taps of
  each output block (``area``: the mean response of the block), a larger one repeats them (``nearest``: nearest
  neighbour upsampling of the old block).
- **channel counts** (feature caps, classes of an inner layer): the overlapping channels are copied, the rest keep
  the target's initialisation. The first convolution of a decoder stage sees ``cat(upsampled, skip)``, so its input
  channels are matched per half. The network's input convolutions (the ``keys_to_in_proj`` every network we ship
  and nnU-Net's own networks name, dynamic-network-architectures' convention) use :func:`adapt_input_channels`
  (timm's rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_transfer.errors import InvalidValueError
from nnunet_transfer.transfer.loading import adapt_input_channels

KERNEL_REDUCE_RULES = ("mean", "sum")
KERNEL_GROW_RULES = ("centre", "spread")
#: first convolution of a U-Net decoder stage (its input is the concatenation of upsampled features and skip)
_DECODER_CONCAT_CONV = re.compile(r"(^|\.)decoder\.stages\.\d+\.convs\.0\.(conv|all_modules\.0)\.weight$")


@dataclass(frozen=True)
class AdaptOptions:
    """Which rules the transfer may use. ``enabled=False`` loads only tensors of equal shape (the strict path)."""

    enabled: bool = True
    kernel_reduce: str = "mean"
    kernel_grow: str = "centre"
    #: only the input convolutions' input channels adapt; every other tensor must fit (MedicalNet into Med3DResNet)
    input_channels_only: bool = False

    def __post_init__(self) -> None:
        if self.kernel_reduce not in KERNEL_REDUCE_RULES:
            raise InvalidValueError(f"kernel_reduce must be one of {KERNEL_REDUCE_RULES}, got {self.kernel_reduce!r}")
        if self.kernel_grow not in KERNEL_GROW_RULES:
            raise InvalidValueError(f"kernel_grow must be one of {KERNEL_GROW_RULES}, got {self.kernel_grow!r}")


@dataclass(frozen=True)
class TensorRole:
    """What a network tensor is, as far as the rules care (read off the module that owns it)."""

    conv: bool = False
    transposed: bool = False
    first_conv: bool = False
    concat_input: bool = False


class NotAdaptable(ValueError):
    """No rule makes the checkpoint tensor fit; the message is the reason reported for the skipped tensor."""


def input_projection_keys(network: nn.Module) -> Tuple[str, ...]:
    """The modules whose weights depend on the input channels: the network's ``keys_to_in_proj``.

    Every network we ship and nnU-Net's own U-Nets name them. A network outside that convention (e.g.
    dynamic-network-architectures' ``ResidualUNet``, a user's own module) says nothing, so its first convolution in
    module order is taken, as for every network before the convention was read.
    """
    keys = getattr(network, "keys_to_in_proj", None)
    if keys is not None:
        return tuple(keys)
    first = next((name for name, m in network.named_modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return () if first is None else (first,)


def tensor_roles(network: nn.Module) -> dict:
    """``{state-dict key: TensorRole}`` for the weights of the network's (transposed) convolutions."""
    in_proj = set(input_projection_keys(network))
    roles = {}
    for name, module in network.named_modules(remove_duplicate=False):
        if not isinstance(module, nn.modules.conv._ConvNd):
            continue
        key = f"{name}.weight" if name else "weight"
        roles[key] = TensorRole(conv=True, transposed=bool(module.transposed), first_conv=name in in_proj,
                                concat_input=bool(_DECODER_CONCAT_CONV.search(key)))
    return roles


def _reduce_axis(weight: torch.Tensor, dim: int, size: int, rule: str) -> Tuple[torch.Tensor, str]:
    k = weight.shape[dim]
    if size == 1:
        out = weight.mean(dim, keepdim=True) if rule == "mean" else weight.sum(dim, keepdim=True)
        return out, rule
    start = (k - size) // 2
    return weight.narrow(dim, start, size), "centre taps"


def _grow_axis(weight: torch.Tensor, dim: int, size: int, rule: str) -> Tuple[torch.Tensor, str]:
    k = weight.shape[dim]
    if rule == "spread":
        index = torch.div(torch.arange(size) * k, size, rounding_mode="floor")
        return weight.index_select(dim, index) * (k / size), "spread"
    if (size - k) % 2:
        raise NotAdaptable(f"kernel size {k} -> {size} along axis {dim - 2}: centre placement needs sizes of equal "
                           "parity (use kernel_grow='spread')")
    pad = (size - k) // 2
    shape = list(weight.shape)
    shape[dim] = pad
    zeros = weight.new_zeros(shape)
    return torch.cat([zeros, weight, zeros], dim), "centre"


def adapt_kernel(weight: torch.Tensor, kernel: Sequence[int], *, transposed: bool = False,
                 reduce: str = "mean", grow: str = "centre") -> Tuple[torch.Tensor, str]:
    """Resize the spatial dimensions of a (transposed) convolution weight ``(a, b, *k)`` to ``kernel``."""
    kernel = tuple(int(k) for k in kernel)
    old = tuple(weight.shape[2:])
    if len(kernel) != len(old):
        raise NotAdaptable(f"{len(old)}D kernel {list(old)} vs {len(kernel)}D kernel {list(kernel)}")
    rules: List[str] = []
    for axis, (k, size) in enumerate(zip(old, kernel)):
        dim = axis + 2
        if k == size:
            continue
        if transposed:
            moved = weight.movedim(dim, -1)
            flat = moved.reshape(-1, 1, k)
            mode = "area" if size < k else "nearest"
            resized = F.interpolate(flat, size=size, mode=mode)
            weight = resized.reshape(*moved.shape[:-1], size).movedim(-1, dim)
            rules.append(f"axis {axis} {mode}")
        elif size < k:
            weight, rule = _reduce_axis(weight, dim, size, reduce)
            rules.append(f"axis {axis} {rule}")
        else:
            weight, rule = _grow_axis(weight, dim, size, grow)
            rules.append(f"axis {axis} {rule}")
    what = "transposed-conv stride" if transposed else "kernel"
    return weight.contiguous(), f"{what} {list(old)} -> {list(kernel)} ({', '.join(rules)})"


def copy_overlap(source: torch.Tensor, target: torch.Tensor, halves_dim: Optional[int] = None) -> torch.Tensor:
    """``target`` with the leading entries of ``source`` copied in along every dimension (the rest kept).

    ``halves_dim``: that dimension holds two concatenated blocks (decoder ``cat(upsampled, skip)``); each block is
    matched to its counterpart.
    """
    if source.ndim != target.ndim:
        raise NotAdaptable(f"{source.ndim} dimensions in the checkpoint vs {target.ndim} in the network")
    out = target.clone()
    blocks = [(0, 0, None)]
    if halves_dim is not None:
        hs, ht = source.shape[halves_dim] // 2, target.shape[halves_dim] // 2
        blocks = [(0, 0, min(hs, ht)), (hs, ht, min(hs, ht))]
    for s_start, t_start, width in blocks:
        src_index, dst_index = [], []
        for d in range(source.ndim):
            if d == halves_dim:
                src_index.append(slice(s_start, s_start + width))
                dst_index.append(slice(t_start, t_start + width))
            else:
                n = min(source.shape[d], target.shape[d])
                src_index.append(slice(0, n))
                dst_index.append(slice(0, n))
        out[tuple(dst_index)] = source[tuple(src_index)].to(out.dtype)
    return out


def _channel_note(name: str, old: int, new: int) -> str:
    what = f"{name} channels" if name else "channels"
    if new < old:
        return f"{what} {old} -> {new} (first {new} copied)"
    return f"{what} {old} -> {new} ({old} copied, {new - old} kept their initialisation)"


def adapt_tensor(source: torch.Tensor, target: torch.Tensor, role: TensorRole = TensorRole(),
                 options: AdaptOptions = AdaptOptions()) -> Tuple[torch.Tensor, str]:
    """Make ``source`` fit ``target``'s shape; returns ``(tensor, rule note)`` or raises :class:`NotAdaptable`."""
    if source.ndim != target.ndim:
        raise NotAdaptable(f"{source.ndim} dimensions in the checkpoint vs {target.ndim} in the network")
    if options.input_channels_only and not (role.first_conv and not role.transposed and source.ndim >= 2
                                            and source.shape[0] == target.shape[0]
                                            and source.shape[2:] == target.shape[2:]):
        raise NotAdaptable(f"shape {list(source.shape)} vs {list(target.shape)}: only the input convolution's input "
                           "channels are adapted here")
    notes: List[str] = []
    value = source
    if role.conv and source.ndim >= 3 and tuple(source.shape[2:]) != tuple(target.shape[2:]):
        value, note = adapt_kernel(value, target.shape[2:], transposed=role.transposed,
                                   reduce=options.kernel_reduce, grow=options.kernel_grow)
        notes.append(note)
    elif not role.conv and source.ndim >= 3 and tuple(source.shape[2:]) != tuple(target.shape[2:]):
        raise NotAdaptable(f"spatial shape {list(source.shape[2:])} vs {list(target.shape[2:])} of a tensor that "
                           "is not a convolution weight")
    in_dim, out_dim = (0, 1) if role.transposed else (1, 0)
    if value.ndim >= 2 and value.shape[1] != target.shape[1] and role.first_conv and not role.transposed:
        how = ("summed over channels" if target.shape[1] == 1
               else f"tiled and scaled by {value.shape[1]}/{target.shape[1]}")
        notes.append(f"input channels {value.shape[1]} -> {target.shape[1]} (timm rule: {how})")
        value = adapt_input_channels(value, target.shape[1])
    if tuple(value.shape) != tuple(target.shape):
        halves = None
        if role.concat_input and value.shape[in_dim] % 2 == 0 and target.shape[in_dim] % 2 == 0:
            halves = in_dim
        for dim, name in ((in_dim, "input"), (out_dim, "output")):
            if dim < value.ndim and value.shape[dim] != target.shape[dim]:
                label = f"{name} (per concatenated half)" if dim == halves else name
                notes.append(_channel_note(label if role.conv else "", value.shape[dim], target.shape[dim]))
        value = copy_overlap(value, target, halves_dim=halves)
    if tuple(value.shape) != tuple(target.shape):  # cannot happen: every dimension was handled above
        raise NotAdaptable(f"shape {list(source.shape)} -> {list(value.shape)} still differs from {list(target.shape)}")
    return value.to(dtype=target.dtype), "; ".join(notes)
