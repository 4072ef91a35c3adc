"""Reading plain pickles (nnU-Net v1's ``model_final_checkpoint.model.pkl``) as data, never as code.

nnU-Net v1 writes the plans and trainer arguments next to each checkpoint with ``pickle.dump`` (``write_pickle``):
dicts, lists, tuples, numbers, strings, numpy arrays and numbers, an ``OrderedDict``. A pickle can name any
importable callable and have it called while loading, so this unpickler resolves only an explicit allowlist of
globals that rebuild exactly those containers and numbers (the pattern of the Python documentation's "Restricting
Globals"); every other global raises :class:`~nnunet_transfer.pretrained.safe_load.UnsafeCheckpointError` before
anything is called.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path
from typing import Any, Union

from nnunet_transfer.pretrained.safe_load import CheckpointFormatError, UnsafeCheckpointError

#: (module, name) of every global a data-only pickle may reference; numpy 1.x and 2.x spellings of each
ALLOWED_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("builtins", "set"), ("builtins", "frozenset"),
    ("_codecs", "encode"),  # protocol 2 spells bytes as encode(str, "latin1") (also allowed by torch's weights_only)
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # arrays under protocol 5
})


class _DataOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # protocols 0-2 spell Python 2 names (``__builtin__.set``); map them as pickle itself does (names only)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafeCheckpointError(
                f"refused to read {self.source}: it references {module}.{name}, which is not plain data (dicts, "
                "lists, numbers, strings, numpy arrays). Loading it could run arbitrary code. If you trust the file, "
                "re-save its content once as JSON in an isolated environment.")
        if module.startswith("numpy"):
            import numpy  # numpy.core (1.x) and numpy._core (2.x) name the same functions

            if module == "numpy":
                return getattr(numpy, name)
            core = getattr(numpy, "_core", None) or numpy.core
            return getattr(getattr(core, module.rsplit(".", 1)[1]), name)
        return super().find_class(module, name)


def read_data_only_pickle(path: Union[str, Path]) -> Any:
    """The content of a plain pickle file, refusing any global outside :data:`ALLOWED_GLOBALS`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return _DataOnlyUnpickler(io.BytesIO(path.read_bytes()), str(path)).load()
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointFormatError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc}); copy it "
                                    "again from the model folder") from exc
