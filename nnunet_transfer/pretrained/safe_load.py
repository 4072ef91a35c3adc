"""Safe loading of foreign (untrusted) checkpoints into our networks.

Checkpoints downloaded from the internet are pickles; unpickling one can run arbitrary code. Everything here
reads files with ``torch.load(..., weights_only=True)`` (tensors and plain containers only) or with
safetensors, and never falls back to a full unpickle. The pieces are generic so that the transfer module can
reuse them for any foreign checkpoint (MedicalNet, DoDNet, nnU-Net ``checkpoint_final.pth``):

- :func:`read_checkpoint_file` reads a file safely (``.pth``/``.pt``/``.model``/``.safetensors``);
- :func:`find_state_dict` digs the state dict out of the usual wrappers (``state_dict``, ``network_weights``,
  ``model``);
- :func:`strip_key_prefixes` removes ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) prefixes;
- :func:`adapt_input_channels` turns a first-conv kernel pretrained for C input channels into one for C';
- :func:`load_matching` loads what matches into a module and returns a :class:`LoadReport`.
"""

from __future__ import annotations

import math
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from nnunet_transfer.errors import InvalidValueError, NnUNetTransferError

try:  # optional dependency; torch.load itself reads *.safetensors paths with it when installed
    from safetensors import SafetensorError
except ImportError:  # pragma: no cover
    class SafetensorError(Exception):  # type: ignore[no-redef]
        """Stand-in when safetensors is not installed (never raised)."""

__all__ = [
    "UnsafeCheckpointError",
    "UnreadableCheckpointError",
    "CheckpointFormatError",
    "LoadReport",
    "read_checkpoint_file",
    "find_state_dict",
    "strip_key_prefixes",
    "adapt_input_channels",
    "load_matching",
    "load_state_dict_file",
]

#: ``fn(checkpoint_tensor, model_tensor) -> (adapted_tensor, note)``: makes a checkpoint tensor fit the model.
TensorAdapter = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, str]"]
#: Keys under which checkpoints of common projects keep their weights, tried in this order.
STATE_DICT_CONTAINER_KEYS: tuple[str, ...] = ("state_dict", "network_weights", "model_state_dict", "model", "net")
#: Prefixes added by wrappers: DataParallel/DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")


class UnsafeCheckpointError(NnUNetTransferError, RuntimeError):
    """The file holds pickled objects other than tensors and plain containers, so we refuse to load it."""


class UnreadableCheckpointError(NnUNetTransferError, ValueError):
    """The file is empty, truncated, not a checkpoint at all, or larger than it may be once decompressed."""


class CheckpointFormatError(NnUNetTransferError, ValueError):
    """The file loads safely but does not hold a state dict in a layout we understand."""


#: ``torch.save`` writes a zip whose members are stored, not compressed; anything decompressing to more than this
#: many times the file's size is refused (a deflate bomb) unless the caller gives its own ``max_bytes``
MAX_DECOMPRESSION_RATIO = 4


def numpy_data_globals() -> list:
    """numpy reconstructors that only rebuild numbers (scalars, numeric dtypes), safe for ``weights_only`` loads.

    nnU-Net checkpoints keep numpy floats in their training log; allowing exactly these (no object, string or void
    dtypes) lets ``torch.load(weights_only=True)`` read them without opening the door to arbitrary objects.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    excluded = ("ObjectDType", "VoidDType", "StringDType", "StrDType", "BytesDType", "DateTime64DType",
                "TimeDelta64DType")
    numeric_dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType") and n not in excluded]
    # checkpoints written under numpy 1.x name the scalar reconstructor numpy.core.multiarray.scalar
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *numeric_dtypes]


def _check_decompressed_size(path: Path, max_bytes: int | None) -> None:
    """Refuse a zip checkpoint whose members decompress to more than ``max_bytes`` (default: a few times the
    file size), before torch inflates them into memory."""
    if not zipfile.is_zipfile(path):
        return  # legacy pickles and safetensors are not compressed: the file size bounds what they hold
    limit = max_bytes if max_bytes is not None else MAX_DECOMPRESSION_RATIO * path.stat().st_size + (1 << 20)
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnreadableCheckpointError(f"{path} is a damaged zip archive ({exc})", file=path,
                                        fix="download or copy the checkpoint again") from exc
    if total > limit:
        raise UnreadableCheckpointError(
            f"refused to load {path}: it decompresses to {total:,} bytes, more than the {limit:,} bytes a "
            f"checkpoint of this network can need (a file of {path.stat().st_size:,} bytes; torch.save does not "
            f"compress)", file=path, fix="use the checkpoint as written by torch.save, not a re-compressed copy")


def _unpickling_refusal(path: Path, exc: BaseException) -> NnUNetTransferError:
    """The error for a file ``torch.load(weights_only=True)`` refused: foreign objects, or not a checkpoint."""
    text = str(exc)
    detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln), None)
    if detail is not None:
        return UnsafeCheckpointError(
            f"refused to load {path}: it contains pickled Python objects besides tensors "
            f"({detail.split('. Please')[0]}). Loading it would allow the file to run arbitrary code, so "
            f"nnunet-transfer only reads weights (torch.load weights_only=True)", file=path,
            fix="if you trust the file's origin, re-save its tensors once in an isolated environment as a plain "
                "dict, e.g. torch.save({'state_dict': sd}, 'clean.pth'), or as .safetensors, and load that instead")
    detail = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), type(exc).__name__)
    return UnreadableCheckpointError(
        f"refused to load {path}: it is not a PyTorch checkpoint that loads as plain data (the weights-only "
        f"loader stopped at: {detail}); it may be damaged, another kind of file, or a pickle the safe loader "
        f"does not accept", file=path, fix="check the file (size, download) and give a torch.save or "
                                           ".safetensors file of the weights")


def read_torch_file_data_only(path: str | Path, max_bytes: int | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` (numpy numbers allowed), whatever the file's suffix.

    This is the check for files that nnU-Net itself later opens with a full unpickle (``-pretrained_weights``,
    checkpoints for ``nnUNetv2_predict``): a pickle the restricted unpickler accepts references no other Python
    object. Empty, truncated, foreign or oversized files raise :class:`UnreadableCheckpointError`, files with
    foreign objects :class:`UnsafeCheckpointError`, both naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint file {path} does not exist; download it first (see pretrain_weights/README.md) "
            f"and pass its path"
        )
    if path.stat().st_size == 0:
        raise UnreadableCheckpointError(f"checkpoint file {path} is empty", file=path,
                                        fix="copy or download it again")
    _check_decompressed_size(path, max_bytes)
    try:
        with torch.serialization.safe_globals(numpy_data_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_refusal(path, exc) from exc
    except (EOFError, KeyError, RuntimeError, ValueError, IndexError, UnicodeDecodeError, SafetensorError) as exc:
        # what torch's readers raise for empty, truncated or non-checkpoint files (KeyError: a bad pickle opcode)
        raise UnreadableCheckpointError(
            f"cannot read checkpoint {path}: it is damaged or not a PyTorch file ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else 'no detail'})", file=path,
            fix="copy or download it again, or save the weights with torch.save") from exc


def read_checkpoint_file(path: str | Path, max_bytes: int | None = None) -> Any:
    """Read a checkpoint file without executing pickled code and return what it holds (on the CPU).

    ``.safetensors`` files are read with the safetensors package; everything else with
    ``torch.load(path, weights_only=True, map_location="cpu")``. A file that needs a full unpickle
    (pickled classes, functions, numpy objects from old PyTorch versions) raises
    :class:`UnsafeCheckpointError` naming the file and the offending object; a damaged, empty or oversized one
    (more than ``max_bytes`` once decompressed) :class:`UnreadableCheckpointError`.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        return read_torch_file_data_only(path, max_bytes)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist; download it first and pass its path")
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # optional dependency
        raise ImportError(
            f"{path} is a .safetensors file but the 'safetensors' package is not installed; "
            f"install it with `pip install safetensors` or convert the file to .pth"
        ) from exc
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnreadableCheckpointError(f"cannot read {path}: it is not a valid .safetensors file ({exc})",
                                        file=path, fix="copy or download it again") from exc


def find_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return the ``{name: tensor}`` mapping inside a loaded checkpoint.

    Accepts a bare state dict or one wrapped under one of :data:`STATE_DICT_CONTAINER_KEYS`
    (MedicalNet: ``state_dict``; nnU-Net: ``network_weights``). Non-tensor entries of a bare dict are an
    error, because silently dropping them could hide a wrong file. ``source`` names the file in messages.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{source} holds a {type(obj).__name__}, not a dict of tensors; save the weights with "
            f"torch.save({{'state_dict': model.state_dict()}}, path)"
        )
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    for key in STATE_DICT_CONTAINER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    top = ", ".join(repr(k) for k in list(obj.keys())[:10])
    raise CheckpointFormatError(
        f"{source} has no state dict: expected tensors at the top level or under one of "
        f"{list(STATE_DICT_CONTAINER_KEYS)}, found top-level keys [{top}]"
    )


def strip_key_prefixes(state_dict: Mapping[str, torch.Tensor],
                       prefixes: Iterable[str] = WRAPPER_PREFIXES) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (``module.``, ``_orig_mod.``) from the start of every key, repeatedly."""
    prefixes = tuple(prefixes)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if new_key.startswith(p):
                    new_key = new_key[len(p):]
                    changed = True
        if new_key in out:
            raise CheckpointFormatError(
                f"keys {key!r} and another key both become {new_key!r} after removing prefixes {prefixes}"
            )
        out[new_key] = value
    return out


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-layer conv kernel ``(out, C, *k)`` to ``in_channels`` input channels.

    Same convention as timm's ``adapt_input_conv``: going to one channel sums the pretrained channels;
    otherwise the kernel is tiled over channels (cut to ``in_channels``) and scaled by ``C / in_channels``,
    so a constant input image produces the same first-layer response as before.
    """
    c = weight.shape[1]
    if in_channels == c:
        return weight.clone()
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_channels / c)
    tiled = weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :in_channels]
    return tiled * (c / in_channels)


@dataclass
class LoadReport:
    """What happened when a foreign state dict was loaded into a module.

    ``loaded``: model keys that received checkpoint values; ``missing``: model keys the checkpoint lacks
    (left at their initialisation); ``unexpected``: checkpoint keys the model has no place for (ignored);
    ``shape_mismatched``: ``(key, checkpoint_shape, model_shape)`` for keys skipped because the shapes differ;
    ``adapted``: ``(key, note)`` for tensors changed to fit (e.g. first-conv input channels);
    ``skipped``: checkpoint keys deliberately filtered out before loading (e.g. a segmentation head);
    ``mismatch_reasons``: for a shape-mismatched key, why no adapter made it fit.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    adapted: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mismatch_reasons: dict[str, str] = field(default_factory=dict)
    loaded_parameters: int = 0
    total_parameters: int = 0

    @property
    def n_loaded(self) -> int:
        return len(self.loaded)

    @property
    def n_missing(self) -> int:
        return len(self.missing)

    @property
    def n_unexpected(self) -> int:
        return len(self.unexpected)

    @property
    def n_shape_mismatched(self) -> int:
        return len(self.shape_mismatched)

    @property
    def fraction_loaded(self) -> float:
        """Fraction of the module's trainable parameter count (elements) that came from the checkpoint."""
        return self.loaded_parameters / self.total_parameters if self.total_parameters else 0.0

    @property
    def complete(self) -> bool:
        """True when every model tensor was loaded and nothing was left over or mismatched."""
        return not (self.missing or self.unexpected or self.shape_mismatched)

    def count_rows(self) -> list[tuple[str, int]]:
        """(label, count) rows of the printed table; subclasses add theirs."""
        return [
            ("loaded (adapted included)", self.n_loaded),
            ("missing (kept init)", self.n_missing),
            ("unexpected (ignored)", self.n_unexpected),
            ("shape mismatched (skipped)", self.n_shape_mismatched),
            ("adapted", len(self.adapted)),
            ("filtered out", len(self.skipped)),
        ]

    def __str__(self) -> str:
        rows = self.count_rows()
        width = max(len(r[0]) for r in rows)
        lines = [f"weights from {self.source}", f"{'tensors':<{width}}  count", f"{'-' * width}  -----"]
        lines += [f"{name:<{width}}  {n:5d}" for name, n in rows]
        lines.append(f"parameters loaded: {self.loaded_parameters:,} / {self.total_parameters:,} "
                     f"({100.0 * self.fraction_loaded:.1f}%)")
        for key, note in self.adapted:
            lines.append(f"adapted {key}: {note}")
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... (+{len(keys) - 8})" if len(keys) > 8 else "")
                lines.append(f"{title}: {shown}")
        for key, cs, ms in self.shape_mismatched[:8]:
            reason = self.mismatch_reasons.get(key)
            lines.append(f"shape mismatch {key}: checkpoint {list(cs)} vs model {list(ms)}"
                         + (f" ({reason})" if reason else ""))
        return "\n".join(lines)


def load_matching(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str,
                  strict_shapes: bool = True,
                  adapters: Mapping[str, TensorAdapter] | None = None,
                  skipped: Iterable[str] = ()) -> LoadReport:
    """Load the entries of ``state_dict`` whose names and shapes match ``module``; report the rest.

    ``adapters`` maps a model key to ``fn(checkpoint_tensor, model_tensor) -> (new_tensor, note)``, applied
    when the shapes differ (e.g. :func:`adapt_input_channels` for the first conv); when the tensor it returns still
    does not fit, the note is recorded as the reason in ``mismatch_reasons``. With ``strict_shapes``
    any remaining shape mismatch raises ``ValueError`` listing them; otherwise they are skipped and
    reported. Missing and unexpected keys never raise here: callers decide what is acceptable.
    """
    adapters = dict(adapters or {})
    model_state = module.state_dict()
    report = LoadReport(source=source, skipped=list(skipped))
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key not in model_state:
            report.unexpected.append(key)
            continue
        target = model_state[key]
        checkpoint_shape = tuple(value.shape)
        note = None
        if checkpoint_shape != tuple(target.shape) and key in adapters:
            value, note = adapters[key](value, target)
        if tuple(value.shape) != tuple(target.shape):
            report.shape_mismatched.append((key, checkpoint_shape, tuple(target.shape)))
            if note:
                report.mismatch_reasons[key] = note
            continue
        if note is not None:
            report.adapted.append((key, note))
        to_load[key] = checked_cast(key, value, target, source)
    if strict_shapes and report.shape_mismatched:
        listing = "; ".join(f"{k}: checkpoint {list(c)} vs model {list(m)}" for k, c, m in report.shape_mismatched[:5])
        raise InvalidValueError(
            f"{source}: {len(report.shape_mismatched)} tensors have shapes that do not fit the network "
            f"({listing}). Build the network that matches the checkpoint, or pass strict_shapes=False to "
            f"skip these tensors and keep their initialisation."
        )
    result = module.load_state_dict(to_load, strict=False)
    if result.unexpected_keys:  # cannot happen: we only pass keys of the module
        raise RuntimeError(f"{source}: unexpected keys after filtering: {result.unexpected_keys}")
    report.loaded = [k for k in model_state if k in to_load]
    report.missing = [k for k in model_state if k not in to_load and not _is_shape_mismatched(report, k)]
    params = dict(module.named_parameters())
    report.total_parameters = sum(p.numel() for p in params.values())
    report.loaded_parameters = sum(p.numel() for k, p in params.items() if k in to_load)
    return report


def checked_cast(key: str, value: torch.Tensor, target: torch.Tensor, source: str) -> torch.Tensor:
    """``value`` in ``target``'s dtype; refuses (naming the tensor) what would silently corrupt the network.

    Refused: integer or boolean values for a floating-point tensor, and NaN/inf values. A floating-point value of
    another precision is cast with a warning (float16 -> float32 is exact; float64 -> float32 rounds).
    """
    if value.dtype == target.dtype:
        cast = value
    elif target.is_floating_point() and not value.is_floating_point():
        raise CheckpointFormatError(
            f"{source}: tensor {key!r} holds {value.dtype} values but the network's {key!r} is {target.dtype}; "
            f"a checkpoint of weights holds floating-point tensors",
            fix="check that this is the right file, or re-save the weights as floating point")
    else:
        if target.is_floating_point():
            warnings.warn(f"{source}: tensor {key!r} is {value.dtype}, cast to the network's {target.dtype}",
                          stacklevel=3)
        cast = value.to(dtype=target.dtype)
    if cast.is_floating_point() and not bool(torch.isfinite(cast).all()):
        raise CheckpointFormatError(
            f"{source}: tensor {key!r} contains NaN or infinite values",
            fix="the checkpoint comes from a diverged training or is damaged: use another checkpoint")
    return cast


def _is_shape_mismatched(report: LoadReport, key: str) -> bool:
    return any(k == key for k, _, _ in report.shape_mismatched)


def load_state_dict_file(path: str | Path, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Read ``path`` safely and return its state dict with wrapper prefixes removed."""
    return strip_key_prefixes(find_state_dict(read_checkpoint_file(path, max_bytes), source=str(path)))
