"""plans.json files from elsewhere, checked as data before any nnU-Net code sees them.

nnU-Net builds the network from a plans file: ``get_network_from_plans`` resolves
``architecture.network_class_name`` with ``pydoc.locate`` (which imports modules) and calls it with the plans'
keyword arguments, after replacing every argument named in ``_kw_requires_import`` by the object its dotted name
locates. A plans file can therefore name ``os.system`` as the network's ``nonlin`` (the network calls it with the
plans' ``nonlin_kwargs``), ``torch.hub.load`` (which runs a ``hubconf.py``), or ``logging.basicConfig``. Other names
nnU-Net resolves from plans (preprocessor, normalisation schemes, resampling functions, label manager, image
reader/writer, experiment planner) are looked up inside nnU-Net's own package only, but must be plain names.

:func:`check_foreign_plans` accepts a plans dict only when

- the network class resolves, without importing anything outside nnU-Net, dynamic-network-architectures,
  nnunet-transfer and MONAI's network classes, to an ``nn.Module`` class defined there (or is named exactly in ``trusted``: the user's
  ``--trust-architecture NAME``);
- every ``_kw_requires_import`` argument is None or a ``torch.nn`` convolution, normalisation, dropout or
  activation class (or a building block of those three packages, or a trusted name);
- sizes, types and shapes are sane: patch sizes, spacings, stage counts, feature counts, strides and kernel sizes
  of the right types and lengths within bounds, configuration inheritance without cycles, and no number anywhere in
  the architecture beyond :data:`MAX_ARCH_INT`.

Anything else raises :class:`ForeignPlansError` naming the file, the field and the value.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import pkgutil
import pydoc
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Union

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.utils.bounded_io import read_json_bounded

__all__ = ["ForeignPlansError", "check_foreign_plans", "check_nnssl_architecture", "read_foreign_plans", "MAX_ARCH_INT"]

#: packages whose network classes nnU-Net may build from a foreign plans file
NETWORK_PACKAGES = ("dynamic_network_architectures.", "nnunetv2.", "nnunet_transfer.", "monai.networks.nets.")
#: packages whose building blocks may be named in ``_kw_requires_import`` (torch.nn: by category, see below)
BLOCK_PACKAGES = ("torch.nn.", "dynamic_network_architectures.", "nnunet_transfer.")
#: no integer in an architecture's arguments is larger (feature counts, stages, kernel sizes ...)
MAX_ARCH_INT = 1 << 16
MAX_STAGES = 16
MAX_PATCH_EDGE = 4096
MAX_PATCH_VOXELS = 1 << 28
MAX_BATCH_SIZE = 4096
#: fields nnU-Net resolves by plain name inside its own package: a name, never a path or dotted name
NAME_FIELDS_PLANS = ("image_reader_writer", "experiment_planner_used", "label_manager")
NAME_FIELDS_CONFIGURATION = ("preprocessor_name", "resampling_fn_data", "resampling_fn_seg",
                             "resampling_fn_probabilities")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_TRUST_FIX = ("if you trust this model's code, pass --trust-architecture {name} (Python: trusted=[{name!r}]); "
              "otherwise do not use this model")


class ForeignPlansError(NnUNetTransferError, ValueError):
    """A plans file from elsewhere names code nnU-Net would run, or holds values no plan can have."""


def _refuse(source: str, field: str, value: Any, reason: str, fix: Optional[str] = None) -> ForeignPlansError:
    shown = repr(value)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return ForeignPlansError(f"refused {source}: {field} = {shown}: {reason}", file=source,
                             fix=fix or "use the plans.json the model was trained with, unmodified")


# ------------------------------------------------------------------------------------------------ class names
def _torch_nn_building_block(cls: type) -> bool:
    """torch.nn convolution, normalisation, dropout or activation classes (nothing else of torch.nn)."""
    from torch import nn
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.modules.conv import _ConvNd
    from torch.nn.modules.dropout import _DropoutNd

    if issubclass(cls, (_ConvNd, _NormBase, _DropoutNd, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)):
        return True
    return cls.__module__ == "torch.nn.modules.activation" and cls is not nn.MultiheadAttention


@lru_cache(maxsize=1)
def _network_short_names() -> frozenset:
    """Class names nnU-Net's fallback finds in dynamic_network_architectures.architectures."""
    import dynamic_network_architectures.architectures as package

    names = set()
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        names |= {n for n, c in vars(module).items() if inspect.isclass(c) and c.__module__ == info.name}
    return frozenset(names)


def _check_class_name(name: Any, field: str, source: str, *, network: bool, trusted: Collection[str]) -> None:
    """Refuse a dotted name nnU-Net would ``pydoc.locate`` unless it is an allowed class (see the module docstring).

    Only modules inside the allowed packages are ever imported to check a name.
    """
    if name in trusted:
        return
    if not isinstance(name, str) or not _DOTTED.match(name) or len(name) > 300:
        raise _refuse(source, field, name, "not a Python class name")
    fix = _TRUST_FIX.format(name=name)
    if "." not in name:
        # pydoc.locate would import a top-level module of this name from sys.path; nnU-Net's fallback searches
        # dynamic-network-architectures for the class
        if network and name in _network_short_names() and importlib.util.find_spec(name) is None:
            return
        raise _refuse(source, field, name, "not a class nnU-Net can build from a plans file", fix)
    roots = NETWORK_PACKAGES if network else BLOCK_PACKAGES
    if not name.startswith(roots):
        raise _refuse(source, field, name, f"nnU-Net would import and call it; only classes of "
                                           f"{', '.join(r.rstrip('.') for r in roots)} are allowed", fix)
    obj = pydoc.locate(name)  # imports modules of the allowed packages only
    from torch import nn

    if not (inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__.startswith(tuple(
            r.rstrip(".") for r in roots))):
        raise _refuse(source, field, name, "does not name a network building class of "
                                           f"{', '.join(r.rstrip('.') for r in roots)}", fix)
    if not network and obj.__module__.startswith("torch.") and not _torch_nn_building_block(obj):
        raise _refuse(source, field, name, "only torch.nn convolution, normalisation, dropout and activation "
                                           "classes may be named here", fix)


# ------------------------------------------------------------------------------------------------ values
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(value: Any, field: str, source: str, low: int, high: int) -> None:
    if not _is_int(value) or not low <= value <= high:
        raise _refuse(source, field, value, f"must be an integer from {low} to {high}")


def _per_stage(value: Any, field: str, source: str, n: Optional[int], low: int, high: int,
               dims: Optional[int] = None) -> None:
    """An int, or a list of ``n`` entries, each an int or (``dims`` given) a list of ``dims`` ints, in range."""
    if _is_int(value):
        _check_int(value, field, source, low, high)
        return
    if not isinstance(value, list) or (n is not None and len(value) != n) or len(value) > MAX_STAGES:
        raise _refuse(source, field, value, f"must be a list of {n if n is not None else 'per-stage'} entries")
    for i, entry in enumerate(value):
        if isinstance(entry, list):
            if dims is not None and len(entry) != dims:
                raise _refuse(source, f"{field}[{i}]", entry, f"must have one entry per axis ({dims})")
            for j, v in enumerate(entry):
                _check_int(v, f"{field}[{i}][{j}]", source, low, high)
        else:
            _check_int(entry, f"{field}[{i}]", source, low, high)


def _walk_numbers(value: Any, field: str, source: str, depth: int = 0) -> None:
    """No number beyond :data:`MAX_ARCH_INT`, no NaN/inf, no deep nesting anywhere under ``field``."""
    if depth > 12:
        raise _refuse(source, field, "...", "nested too deeply")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        if isinstance(value, str) and len(value) > 1000:
            raise _refuse(source, field, value, "string too long")
        return
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or abs(value) > MAX_ARCH_INT:
            raise _refuse(source, field, value, f"numbers here are finite and at most {MAX_ARCH_INT}")
        return
    if isinstance(value, list):
        if len(value) > 1000:
            raise _refuse(source, field, f"<list of {len(value)}>", "list too long")
        for i, v in enumerate(value):
            _walk_numbers(v, f"{field}[{i}]", source, depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > 1000:
            raise _refuse(source, field, f"<dict of {len(value)}>", "too many entries")
        for k, v in value.items():
            _walk_numbers(v, f"{field}.{k}", source, depth + 1)
        return
    raise _refuse(source, field, value, "not a JSON value")


def _check_name_field(value: Any, field: str, source: str) -> None:
    if not isinstance(value, str) or not value.isidentifier():
        raise _refuse(source, field, value, "nnU-Net looks this up by plain name in its own package; it must be one")


def _check_architecture(arch: Any, field: str, source: str, dims: Optional[int], trusted: Collection[str],
                        registry_names: bool = False) -> None:
    """``registry_names``: a plain identifier as the network name is a name of nnssl's network registry, which nnssl
    maps to a class itself ("ResEncL", "PrimusM", as nnssl's trainers write them): data, nothing imports it."""
    if not isinstance(arch, dict):
        raise _refuse(source, field, arch, "must be a dict")
    name = arch.get("network_class_name")
    if not (registry_names and isinstance(name, str) and _NNSSL_REGISTRY_NAME.fullmatch(name)):
        _check_class_name(name, f"{field}.network_class_name", source, network=True, trusted=trusted)
    kwargs = arch.get("arch_kwargs", {})
    if not isinstance(kwargs, dict):
        raise _refuse(source, f"{field}.arch_kwargs", kwargs, "must be a dict")
    requires = arch.get("_kw_requires_import", [])
    if not isinstance(requires, list) or len(requires) > 64:
        raise _refuse(source, f"{field}._kw_requires_import", requires, "must be a list of argument names")
    for key in requires:
        if not isinstance(key, str) or key not in kwargs:
            raise _refuse(source, f"{field}._kw_requires_import", key, "names no argument of arch_kwargs")
        if kwargs[key] is not None:
            _check_class_name(kwargs[key], f"{field}.arch_kwargs.{key}", source, network=False, trusted=trusted)
    _walk_numbers(kwargs, f"{field}.arch_kwargs", source)
    n_stages = kwargs.get("n_stages")
    if n_stages is not None:
        _check_int(n_stages, f"{field}.arch_kwargs.n_stages", source, 1, MAX_STAGES)
    for key, low, high, n, per_axis in (
            ("features_per_stage", 1, MAX_ARCH_INT, n_stages, False),
            ("strides", 1, 64, n_stages, True), ("kernel_sizes", 1, 64, n_stages, True),
            ("n_conv_per_stage", 1, 64, n_stages, False), ("n_blocks_per_stage", 1, 64, n_stages, False),
            ("n_conv_per_stage_decoder", 1, 64, None if n_stages is None else n_stages - 1, False)):
        if key in kwargs:
            _per_stage(kwargs[key], f"{field}.arch_kwargs.{key}", source, n, low, high, dims if per_axis else None)


def _check_configuration(name: str, config: Any, plans: Mapping, source: str, trusted: Collection[str]) -> None:
    field = f"configurations.{name}"
    if not isinstance(config, dict):
        raise _refuse(source, field, config, "must be a dict")
    dims = None
    if "patch_size" in config:
        patch = config["patch_size"]
        if not isinstance(patch, list) or len(patch) not in (2, 3):
            raise _refuse(source, f"{field}.patch_size", patch, "must be a list of 2 or 3 sizes")
        for i, edge in enumerate(patch):
            _check_int(edge, f"{field}.patch_size[{i}]", source, 1, MAX_PATCH_EDGE)
        if math.prod(patch) > MAX_PATCH_VOXELS:
            raise _refuse(source, f"{field}.patch_size", patch, f"more than {MAX_PATCH_VOXELS:,} voxels")
        dims = len(patch)
    if "spacing" in config:
        spacing = config["spacing"]
        if (not isinstance(spacing, list) or (dims is not None and len(spacing) != dims)
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
                           for s in spacing)):
            raise _refuse(source, f"{field}.spacing", spacing, "must be positive numbers, one per axis")
    if "batch_size" in config:
        _check_int(config["batch_size"], f"{field}.batch_size", source, 1, MAX_BATCH_SIZE)
    for key in NAME_FIELDS_CONFIGURATION:
        if key in config:
            _check_name_field(config[key], f"{field}.{key}", source)
    schemes = config.get("normalization_schemes", [])
    if not isinstance(schemes, list) or len(schemes) > 256:
        raise _refuse(source, f"{field}.normalization_schemes", schemes, "must be a list of scheme names")
    for i, scheme in enumerate(schemes):
        _check_name_field(scheme, f"{field}.normalization_schemes[{i}]", source)
    parent = config.get("inherits_from")
    if parent is not None and (not isinstance(parent, str) or parent not in plans["configurations"]):
        raise _refuse(source, f"{field}.inherits_from", parent, "names no configuration of this plans file")
    if "architecture" in config:
        _check_architecture(config["architecture"], f"{field}.architecture", source, dims, trusted)
    elif "UNet_class_name" in config and config["UNet_class_name"] not in ("PlainConvUNet", "ResidualEncoderUNet"):
        raise _refuse(source, f"{field}.UNet_class_name", config["UNet_class_name"], "unknown architecture")


def _check_inheritance(configurations: Mapping[str, Any], source: str) -> None:
    for name in configurations:
        seen: List[str] = []
        current: Optional[str] = name
        while current is not None:
            if current in seen:
                raise _refuse(source, f"configurations.{name}.inherits_from", " -> ".join(seen + [current]),
                              "configurations inherit from each other in a circle")
            seen.append(current)
            entry = configurations.get(current)
            current = entry.get("inherits_from") if isinstance(entry, dict) else None


def check_foreign_plans(plans: Any, source: Union[str, Path], trusted: Sequence[str] = ()) -> Dict[str, Any]:
    """Return ``plans`` if nnU-Net may use it (see the module docstring); else raise :class:`ForeignPlansError`."""
    source = str(source)
    trusted = frozenset(trusted)
    if not isinstance(plans, dict):
        raise _refuse(source, "(top level)", type(plans).__name__, "a plans file holds a dict")
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or not configurations or len(configurations) > 256:
        raise _refuse(source, "configurations", configurations, "must be a dict of configurations")
    for key in NAME_FIELDS_PLANS:
        if key in plans:
            _check_name_field(plans[key], key, source)
    for key in ("transpose_forward", "transpose_backward"):
        if key in plans:
            value = plans[key]
            if not isinstance(value, list) or sorted(value) != list(range(len(value))) or len(value) not in (2, 3):
                raise _refuse(source, key, value, "must be a permutation of the axes")
    for name, config in configurations.items():
        if not isinstance(name, str) or not name or len(name) > 200:
            raise _refuse(source, "configurations", name, "configuration names are short strings")
        _check_configuration(name, config, plans, source, trusted)
    _check_inheritance(configurations, source)
    for name in configurations:  # what nnU-Net resolves: the parents' entries updated with the child's
        if configurations[name].get("inherits_from") is not None:
            _check_configuration(name, _resolved(configurations, name), plans, source, trusted)
    return plans


def _resolved(configurations: Mapping[str, Any], name: str) -> Dict[str, Any]:
    config = dict(configurations[name])
    parent = config.pop("inherits_from", None)
    if parent is None:
        return config
    merged = _resolved(configurations, parent)
    merged.update(config)
    return merged


#: a name of nnssl's network registry (``get_network_by_name``): an identifier without dots
_NNSSL_REGISTRY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def check_nnssl_architecture(architecture: Any, source: Union[str, Path], trusted: Sequence[str] = ()) -> None:
    """Check an nnssl adaptation plan's ``architecture_plans`` (``arch_class_name``, ``arch_kwargs``,
    ``arch_kwargs_requiring_import``) like a plans file's architecture."""
    if architecture is None:
        return
    if not isinstance(architecture, dict):
        raise _refuse(str(source), "nnssl_adaptation_plan.architecture_plans", architecture, "must be a dict")
    as_plans = {"network_class_name": architecture.get("arch_class_name"),
                "arch_kwargs": architecture.get("arch_kwargs", {}),
                "_kw_requires_import": architecture.get("arch_kwargs_requiring_import", [])}
    _check_architecture(as_plans, "nnssl_adaptation_plan.architecture_plans", str(source), None, frozenset(trusted),
                        registry_names=True)


def read_foreign_plans(path: Union[str, Path], trusted: Sequence[str] = ()) -> Dict[str, Any]:
    """Read a plans.json from elsewhere (bounded) and check it with :func:`check_foreign_plans`."""
    return check_foreign_plans(read_json_bounded(path), path, trusted)
