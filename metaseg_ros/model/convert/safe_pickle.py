"""A restricted unpickler for Detectron2 ``.pkl`` checkpoints.

Detectron2 model-zoo checkpoints are pickles of ``{"model": {name: numpy array}, ...}``.
Unpickling runs whatever callables a pickle names, so a plain ``pickle.load`` of an untrusted
file can execute code. This unpickler resolves only the globals needed to rebuild numpy
arrays and plain containers; anything else (os.system, builtins.eval, ...) is refused with
an UnpicklingError naming the global.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# (module, name) pairs a numpy-array pickle needs, under numpy 1 and numpy 2 module names.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
    ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
    ("numpy.core.multiarray", "scalar"): np.float32(0).__reduce__()[0],
    ("numpy._core.multiarray", "scalar"): np.float32(0).__reduce__()[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    # Python-2 era pickles (protocol 2) encode bytes through _codecs.encode(str, "latin1").
    ("_codecs", "encode"): __import__("_codecs").encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays and plain containers only."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global or refuse."""
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': checkpoint pickles may contain "
                "only numpy arrays and plain containers (is this file a Detectron2 "
                "checkpoint from a trusted source?)")
        return allowed


def restricted_loads(data: bytes) -> Any:
    """Unpickle bytes with RestrictedUnpickler (latin1 for Python-2 pickles, as Detectron2)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def load_detectron2_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """The ``model`` weights of a Detectron2 .pkl checkpoint, as {name: numeric ndarray}.

    Accepts ``{"model": {...}, "__author__": ...}`` (model-zoo layout) or a bare
    ``{name: ndarray}`` dict; anything else raises ValueError.
    """
    with open(path, "rb") as handle:
        loaded = restricted_loads(handle.read())
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a dict, found {type(loaded).__name__}")
    weights = loaded.get("model", loaded)
    if not isinstance(weights, dict):
        raise ValueError(f"{path}: 'model' is a {type(weights).__name__}, not a dict")
    result: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
            raise ValueError(f"{path}: entry {key!r} is not a numeric array "
                             f"({type(value).__name__})")
        result[str(key)] = value
    return result
