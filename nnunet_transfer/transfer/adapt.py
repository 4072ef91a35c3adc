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
- **positional embedding of another token grid** (a transformer such as Primus planned for another patch size):
  the embedding is resized trilinearly over the 3D token grid (``align_corners=False``, as nnU-Net master's
  ``interpolate_patch_embed_3d``); prefix tokens (register tokens) are copied. Copying the leading rows instead would
  give every token the embedding of another position. Without the checkpoint's grid the tensor is not loaded.
"""

from __future__ import annotations

import math
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
    #: a learned positional embedding ``(1, prefix + tokens, C)`` over a 3D token grid
    positional: bool = False


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


def positional_embedding_keys(network: nn.Module) -> Tuple[str, ...]:
    """The network's learned positional embeddings: its ``key_to_lpe`` (dynamic-network-architectures' name for it)
    and every parameter called ``pos_embed``."""
    keys = {name for name, _ in network.named_parameters() if name.split(".")[-1] == "pos_embed"}
    lpe = getattr(network, "key_to_lpe", None)
    if lpe:
        keys.add(lpe)
    return tuple(sorted(keys))


def token_grid(network: nn.Module) -> Optional[Tuple[int, ...]]:
    """The 3D token grid of a transformer network (Primus: its rotary embedding's ``feat_shape``, set from the patch
    size), or None when the network states none."""
    grid = getattr(network, "token_grid", None)
    if grid is None:
        for module in network.modules():
            shape = getattr(getattr(module, "rope", None), "feat_shape", None)
            if shape is not None:
                grid = shape
                break
    return None if grid is None else tuple(int(g) for g in grid)


def resize_positional_embedding(embedding: torch.Tensor, source_grid: Sequence[int], target_grid: Sequence[int]
                                ) -> torch.Tensor:
    """``(1, prefix + prod(source_grid), C)`` -> ``(1, prefix + prod(target_grid), C)``: the grid part resized
    trilinearly (token order: the first grid axis varies slowest, as a flattened convolution output), the prefix
    tokens kept."""
    source_grid, target_grid = tuple(int(g) for g in source_grid), tuple(int(g) for g in target_grid)
    n_grid = math.prod(source_grid)
    prefix = embedding.shape[1] - n_grid
    if embedding.ndim != 3 or prefix < 0:
        raise NotAdaptable(f"positional embedding {list(embedding.shape)} does not hold a {list(source_grid)} token "
                           "grid")
    head, grid = embedding[:, :prefix], embedding[:, prefix:]
    channels = grid.shape[-1]
    volume = grid.reshape(1, *source_grid, channels).movedim(-1, 1).float()
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(source_grid)]
    resized = F.interpolate(volume, size=target_grid, mode=mode, align_corners=False)
    flat = resized.movedim(1, -1).reshape(1, math.prod(target_grid), channels).to(embedding.dtype)
    return torch.cat([head, flat], dim=1)


def tensor_roles(network: nn.Module) -> dict:
    """``{state-dict key: TensorRole}`` for the weights of the network's (transposed) convolutions and its
    positional embeddings."""
    in_proj = set(input_projection_keys(network))
    roles = {key: TensorRole(positional=True) for key in positional_embedding_keys(network)}
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


def _adapt_positional(source: torch.Tensor, target: torch.Tensor,
                      token_grids: Optional[Tuple[Sequence[int], Sequence[int]]]) -> Tuple[torch.Tensor, str]:
    if source.shape[-1] != target.shape[-1]:
        raise NotAdaptable(f"positional embedding width {source.shape[-1]} vs {target.shape[-1]}")
    if token_grids is None or None in token_grids:
        raise NotAdaptable("positional embedding of another token grid and the checkpoint's grid is unknown: left "
                           "at its initialisation (copying rows would give tokens the embedding of other positions)")
    source_grid, target_grid = token_grids
    resized = resize_positional_embedding(source, source_grid, target_grid)
    if tuple(resized.shape) != tuple(target.shape):
        raise NotAdaptable(f"positional embedding {list(source.shape)} on grid {list(source_grid)} resized to "
                           f"{list(resized.shape)}, the network has {list(target.shape)}")
    return resized.to(target.dtype), (f"positional embedding token grid {list(source_grid)} -> {list(target_grid)} "
                                      "(trilinear)")


def _channel_note(name: str, old: int, new: int) -> str:
    what = f"{name} channels" if name else "channels"
    if new < old:
        return f"{what} {old} -> {new} (first {new} copied)"
    return f"{what} {old} -> {new} ({old} copied, {new - old} kept their initialisation)"


def adapt_tensor(source: torch.Tensor, target: torch.Tensor, role: TensorRole = TensorRole(),
                 options: AdaptOptions = AdaptOptions(),
                 token_grids: Optional[Tuple[Sequence[int], Sequence[int]]] = None) -> Tuple[torch.Tensor, str]:
    """Make ``source`` fit ``target``'s shape; returns ``(tensor, rule note)`` or raises :class:`NotAdaptable`.

    ``token_grids``: (checkpoint grid, network grid) of a positional embedding (``role.positional``).
    """
    if source.ndim != target.ndim:
        raise NotAdaptable(f"{source.ndim} dimensions in the checkpoint vs {target.ndim} in the network")
    if role.positional:
        return _adapt_positional(source, target, token_grids)
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
