"""A keep-latest hand-over between the ROS executor and the processing thread."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item: a newer `put` replaces an item not yet taken.

    Latency therefore never grows when frames arrive faster than they are processed;
    `put` reports each replaced (dropped) item so the caller can count it.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Store `item`; True when it replaced one that was never taken."""
        with self._condition:
            replaced = self._item is not None
            self._item = item
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """Wait for and remove the item; None on timeout or after `close`."""
        with self._condition:
            self._condition.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> T | None:
        """Wake any waiting `take` for good (shutdown); returns the item never taken, if
        any, so the caller can count it."""
        with self._condition:
            self._closed = True
            item, self._item = self._item, None
            self._condition.notify_all()
            return item

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed
