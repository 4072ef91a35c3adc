"""Safe reading of foreign (untrusted) checkpoint files: bytes in, plain containers of tensors out.

Checkpoints downloaded from the internet are pickles; unpickling one can run arbitrary code. Everything here
reads files with ``torch.load(..., weights_only=True)`` (tensors and plain containers only) or with
safetensors, and never falls back to a full unpickle. Nothing here knows a network: loading tensors into one is
:mod:`nnunet_transfer.transfer.loading`'s work.

- :func:`read_checkpoint_bytes` deserialises bytes already read (``torch.save`` files or ``.safetensors``), so a
  file is opened once and the bytes hashed are the bytes used;
- :func:`read_checkpoint_file` reads a file safely (``.pth``/``.pt``/``.model``/``.safetensors``);
- :func:`find_state_dict` digs the state dict out of the usual wrappers (``state_dict``, ``network_weights``,
  ``model``);
- :func:`strip_key_prefixes` removes ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) prefixes.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch

from nnunet_transfer.errors import NnUNetTransferError

try:  # optional dependency; torch.load itself reads *.safetensors paths with it when installed
    from safetensors import SafetensorError
except ImportError:  # pragma: no cover
    class SafetensorError(Exception):  # type: ignore[no-redef]
        """Stand-in when safetensors is not installed (never raised)."""

__all__ = [
    "UnsafeCheckpointError",
    "UnreadableCheckpointError",
    "CheckpointFormatError",
    "read_file_bytes",
    "read_checkpoint_bytes",
    "read_torch_bytes_data_only",
    "read_checkpoint_file",
    "find_state_dict",
    "strip_key_prefixes",
    "load_state_dict_file",
]

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


def read_file_bytes(path: str | Path) -> bytes:
    """The whole content of a checkpoint file, read once (the caller hashes, checks and deserialises these bytes;
    nothing opens the path again)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint file {path} does not exist; download it first (see pretrain_weights/README.md) "
            f"and pass its path"
        )
    data = path.read_bytes()
    if not data:
        raise UnreadableCheckpointError(f"checkpoint file {path} is empty", file=path,
                                        fix="copy or download it again")
    return data


#: torch's own switch: every ``torch.load`` of the process reads with ``weights_only=True``, whatever its caller asks
FORCE_WEIGHTS_ONLY_VARIABLE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """While inside, every ``torch.load`` (nnU-Net's ``weights_only=False`` calls included) reads as data only, with
    numpy numbers allowed: torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` switch and its ``safe_globals``, no patching."""
    previous = os.environ.get(FORCE_WEIGHTS_ONLY_VARIABLE)
    os.environ[FORCE_WEIGHTS_ONLY_VARIABLE] = "1"
    try:
        with torch.serialization.safe_globals(numpy_data_globals()):
            yield
    finally:
        if previous is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY_VARIABLE, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY_VARIABLE] = previous


def force_weights_only_loads() -> None:
    """From now on every ``torch.load`` of this process (and of processes it starts) reads as data only, numpy
    numbers allowed. For an ``nnUNetv2_train`` run whose ``-pretrained_weights`` nnU-Net opens itself: whatever the
    file holds by the time nnU-Net reads it, nothing in it is run."""
    os.environ[FORCE_WEIGHTS_ONLY_VARIABLE] = "1"
    torch.serialization.add_safe_globals(numpy_data_globals())


def _check_decompressed_size(data: bytes, source: str, max_bytes: int | None) -> None:
    """Refuse a zip checkpoint whose members decompress to more than ``max_bytes`` (default: a few times the
    file size), before torch inflates them into memory."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return  # legacy pickles and safetensors are not compressed: the file size bounds what they hold
    limit = max_bytes if max_bytes is not None else MAX_DECOMPRESSION_RATIO * len(data) + (1 << 20)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnreadableCheckpointError(f"{source} is a damaged zip archive ({exc})", file=source,
                                        fix="download or copy the checkpoint again") from exc
    if total > limit:
        raise UnreadableCheckpointError(
            f"refused to load {source}: it decompresses to {total:,} bytes, more than the {limit:,} bytes a "
            f"checkpoint of this network can need (a file of {len(data):,} bytes; torch.save does not "
            f"compress)", file=source, fix="use the checkpoint as written by torch.save, not a re-compressed copy")


def unpickling_refusal(source: str, exc: BaseException) -> NnUNetTransferError:
    """The error for a file ``torch.load(weights_only=True)`` refused: foreign objects, or not a checkpoint."""
    text = str(exc)
    detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln), None)
    if detail is not None:
        return UnsafeCheckpointError(
            f"refused to load {source}: it contains pickled Python objects besides tensors "
            f"({detail.split('. Please')[0]}). Loading it would allow the file to run arbitrary code, so "
            f"nnunet-transfer only reads weights (torch.load weights_only=True)", file=source,
            fix="if you trust the file's origin, re-save its tensors once in an isolated environment as a plain "
                "dict, e.g. torch.save({'state_dict': sd}, 'clean.pth'), or as .safetensors, and load that instead")
    detail = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), type(exc).__name__)
    return UnreadableCheckpointError(
        f"refused to load {source}: it is not a PyTorch checkpoint that loads as plain data (the weights-only "
        f"loader stopped at: {detail}); it may be damaged, another kind of file, or a pickle the safe loader "
        f"does not accept", file=source, fix="check the file (size, download) and give a torch.save or "
                                             ".safetensors file of the weights")


def read_torch_bytes_data_only(data: bytes, source: str, max_bytes: int | None = None) -> Any:
    """``torch.load(weights_only=True)`` (numpy numbers allowed) of bytes already read; ``source`` names them.

    A pickle this restricted unpickler accepts references no other Python object. Empty, truncated, foreign or
    oversized data raise :class:`UnreadableCheckpointError`, foreign objects :class:`UnsafeCheckpointError`, both
    naming ``source``.
    """
    if not data:
        raise UnreadableCheckpointError(f"checkpoint {source} is empty", file=source, fix="copy or download it again")
    _check_decompressed_size(data, source, max_bytes)
    try:
        with torch.serialization.safe_globals(numpy_data_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise unpickling_refusal(source, exc) from exc
    except (EOFError, KeyError, RuntimeError, ValueError, IndexError, UnicodeDecodeError, SafetensorError) as exc:
        # what torch's readers raise for empty, truncated or non-checkpoint files (KeyError: a bad pickle opcode)
        raise UnreadableCheckpointError(
            f"cannot read checkpoint {source}: it is damaged or not a PyTorch file ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else 'no detail'})", file=source,
            fix="copy or download it again, or save the weights with torch.save") from exc


def read_safetensors_bytes(data: bytes, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file already read (safetensors holds no code by design)."""
    try:
        from safetensors.torch import load
    except ImportError as exc:  # optional dependency
        raise ImportError(
            f"{source} is a .safetensors file but the 'safetensors' package is not installed; "
            f"install it with `pip install safetensors` or convert the file to .pth"
        ) from exc
    try:
        return load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnreadableCheckpointError(f"cannot read {source}: it is not a valid .safetensors file ({exc})",
                                        file=source, fix="copy or download it again") from exc


def read_checkpoint_bytes(data: bytes, source: str, max_bytes: int | None = None) -> Any:
    """What checkpoint bytes hold, without executing pickled code: ``.safetensors`` (``source`` ends so) with the
    safetensors package, everything else with ``torch.load(weights_only=True)``."""
    if str(source).lower().endswith(".safetensors"):
        return read_safetensors_bytes(data, source)
    return read_torch_bytes_data_only(data, source, max_bytes)


def read_torch_file_data_only(path: str | Path, max_bytes: int | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` (numpy numbers allowed), whatever the file's suffix.

    This is the check for files that nnU-Net itself later opens with a full unpickle (``-pretrained_weights``,
    checkpoints for ``nnUNetv2_predict``). Errors as :func:`read_torch_bytes_data_only`, naming the file.
    """
    return read_torch_bytes_data_only(read_file_bytes(path), str(path), max_bytes)


def read_checkpoint_file(path: str | Path, max_bytes: int | None = None) -> Any:
    """Read a checkpoint file once without executing pickled code and return what it holds (on the CPU).

    ``.safetensors`` files are read with the safetensors package; everything else with
    ``torch.load(weights_only=True, map_location="cpu")``. A file that needs a full unpickle
    (pickled classes, functions, numpy objects from old PyTorch versions) raises
    :class:`UnsafeCheckpointError` naming the file and the offending object; a damaged, empty or oversized one
    (more than ``max_bytes`` once decompressed) :class:`UnreadableCheckpointError`.
    """
    return read_checkpoint_bytes(read_file_bytes(path), str(path), max_bytes)


def _is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of names (strings) to tensors."""
    return (isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) for k in obj)
            and all(isinstance(v, torch.Tensor) for v in obj.values()))


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
    if _is_state_dict(obj):
        return dict(obj)
    for key in STATE_DICT_CONTAINER_KEYS:
        inner = obj.get(key)
        if _is_state_dict(inner):
            return dict(inner)
    top = ", ".join(repr(k) for k in list(obj.keys())[:10])
    raise CheckpointFormatError(
        f"{source} has no state dict: expected tensors at the top level or under one of "
        f"{list(STATE_DICT_CONTAINER_KEYS)}, found top-level keys [{top}]"
    )


def strip_key_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes: Iterable[str] = WRAPPER_PREFIXES,
                       source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Remove any of ``prefixes`` (by default the wrappers ``module.``, ``_orig_mod.``) from the start of every key,
    repeatedly (``module.backbone.x`` -> ``x``); refuses a file in which two keys become one (it is ambiguous)."""
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
            raise CheckpointFormatError(f"{source}: keys {key!r} and another key both become {new_key!r} once "
                                        f"{prefixes} are removed", file=source,
                                        fix="the file mixes prefixed and plain names; save one state dict")
        out[new_key] = value
    return out


def load_state_dict_file(path: str | Path, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Read ``path`` safely and return its state dict with wrapper prefixes removed."""
    return strip_key_prefixes(find_state_dict(read_checkpoint_file(path, max_bytes), source=str(path)))
