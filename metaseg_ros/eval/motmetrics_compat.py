"""Running motmetrics 1.4.0 on numpy 2.

motmetrics 1.4.0 calls `np.asfarray` (in `motmetrics.distances.iou_matrix`), which numpy 2
removed. `numpy_asfarray()` puts a stand-in on the numpy module only for the duration of a
`with` block, and only when numpy lacks the function; nested and concurrent blocks share
one installation (reference counted under a lock) and the last one out removes it, so
nothing outside these blocks ever sees the attribute. `import_motmetrics()` imports the
package inside such a block.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

_lock = threading.Lock()
_users = 0
_installed = False


def _asfarray(a: Any, dtype: Any = np.float64) -> np.ndarray:
    """What numpy 1.x's asfarray did: an array of a's values in a floating dtype."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.inexact):
        dtype = np.dtype(np.float64)
    return np.asarray(a, dtype=dtype)


@contextmanager
def numpy_asfarray() -> Iterator[None]:
    """Make `np.asfarray` available inside the block when numpy lacks it (numpy >= 2)."""
    global _users, _installed
    with _lock:
        if _users == 0 and not hasattr(np, "asfarray"):
            np.asfarray = _asfarray  # type: ignore[attr-defined]
            _installed = True
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _installed:
                del np.asfarray  # type: ignore[attr-defined]
                _installed = False


def import_motmetrics() -> ModuleType:
    """The motmetrics package (imported with the stand-in in place)."""
    with numpy_asfarray():
        import motmetrics

    return motmetrics
