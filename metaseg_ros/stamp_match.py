"""Matching a second stream (depth images) to colour frames by header stamp (no ROS).

ROS 2's message_filters (ApproximateTime / ExactTime synchronisers) has no wheel on PyPI
and is not installed everywhere the node runs, and its synchronisers call back with sets
of messages as they arrive, whereas the node needs the depth image of a colour frame it has
already taken from its keep-latest slot (older colour frames were dropped on purpose). So
the node keeps the last few depth images here, in a bounded buffer, and asks for the one
nearest to each processed frame's stamp.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class StampBuffer(Generic[T]):
    """The last `capacity` items with their stamps (ns), thread-safe.

    `nearest` answers at once; `wait_nearest` waits (bounded) for an item that may still be
    on its way, assuming stamps arrive in increasing order: once an item at or after the
    wanted stamp has arrived, no later one can be nearer.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._items: deque[tuple[int, T]] = deque(maxlen=capacity)
        self._condition = threading.Condition()

    def put(self, stamp_ns: int, item: T) -> None:
        """Keep `item` (the oldest one goes when the buffer is full)."""
        with self._condition:
            self._items.append((stamp_ns, item))
            self._condition.notify_all()

    def clear(self) -> None:
        """Forget every item."""
        with self._condition:
            self._items.clear()

    def __len__(self) -> int:
        with self._condition:
            return len(self._items)

    def _best(self, stamp_ns: int, tolerance_ns: int) -> tuple[T | None, bool]:
        """The nearest item within the tolerance, and whether a nearer one can still come."""
        best, best_gap, newest = None, None, None
        for stamp, item in self._items:
            gap = abs(stamp - stamp_ns)
            if gap <= tolerance_ns and (best_gap is None or gap < best_gap):
                best, best_gap = item, gap
            newest = stamp if newest is None else max(newest, stamp)
        final = best_gap == 0 or (newest is not None and newest >= stamp_ns)
        return best, not final

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> T | None:
        """The item whose stamp is nearest to `stamp_ns`, if within `tolerance_ns`."""
        with self._condition:
            return self._best(stamp_ns, tolerance_ns)[0]

    def wait_nearest(self, stamp_ns: int, tolerance_ns: int, timeout: float) -> T | None:
        """As `nearest`, waiting up to `timeout` seconds while a nearer item may still come
        (none yet at or after the stamp)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                best, pending = self._best(stamp_ns, tolerance_ns)
                remaining = deadline - time.monotonic()
                if not pending or remaining <= 0:
                    return best
                self._condition.wait(remaining)
