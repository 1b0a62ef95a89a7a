"""Track id allocation, shareable between the trackers of several cameras (no ROS).

Ids are uint32, start at `first`, increase by one per confirmed track and are never reused
while they are in use; after 2**32 - 1 the counter wraps to 1, skipping ids in use. Trackers
given the same TrackIds (one tracker per camera of one node) never hand out the same id, so
a track id names one object in one camera.
"""

from __future__ import annotations

MAX_TRACK_ID = 2**32 - 1


class TrackIds:
    """The next id and the ids held by live tracks."""

    def __init__(self, first: int = 1) -> None:
        if not 1 <= first <= MAX_TRACK_ID:
            raise ValueError(f"first_track_id must be in [1, {MAX_TRACK_ID}]")
        self._next = first
        self._in_use: set[int] = set()

    @property
    def next_id(self) -> int:
        """The id the next confirmed track will get (unless it is still in use)."""
        return self._next

    def allocate(self) -> int:
        """A new id, not held by any live track."""
        while True:
            candidate = self._next
            self._next = candidate + 1 if candidate < MAX_TRACK_ID else 1
            if candidate not in self._in_use:
                self._in_use.add(candidate)
                return candidate

    def release(self, track_id: int) -> None:
        """The track holding `track_id` ended (0, an unconfirmed track's, is ignored)."""
        self._in_use.discard(track_id)
