"""Noticing that the stream under the pipeline changed: a looped bag, a restarted camera or
simulation, another camera on the same topic. Such a frame must not be tracked as the
continuation of the previous one: the caller resets the model memory and the tracks.

Pure Python (no ROS, no torch): the node feeds it each frame's header, replay each bag
message's header.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from metaseg_ros.settings import check_settings, setting

STREAM_PREFIX = "stream."


class ResetCause(enum.Enum):
    """Why the pipeline was reset (the names are the diagnostics keys)."""

    STAMP_BACKWARDS = "stamp_backwards"
    TIME_JUMP = "time_jump"
    FRAME_ID = "frame_id_changed"
    IMAGE_SIZE = "image_size_changed"
    BACKEND_FALLBACK = "backend_fallback"
    REQUESTED = "requested"


@dataclass(frozen=True)
class StreamSettings:
    """When a stream counts as a new one, and when as stopped."""

    max_gap: float = setting(
        5.0, "Seconds between two frames' header stamps beyond which the second starts a new "
        "stream (model memory and tracks reset; 0 = never for a forward jump)",
        minimum=0.0, maximum=86400.0)
    stale_after: float = setting(
        2.0, "Seconds without input after which /diagnostics reports ERROR 'no input'",
        minimum=0.1, maximum=3600.0)

    def __post_init__(self) -> None:
        check_settings(self)


class StreamGuard:
    """Decides, frame by frame, whether a frame continues the stream seen so far.

    A frame starts a new stream when its stamp is earlier than the previous frame's (a bag
    loop, a restarted simulation), later by more than `max_gap` seconds, or when its
    frame_id or image size differs from the previous frame's.
    """

    def __init__(self, settings: StreamSettings | None = None) -> None:
        self.settings = settings or StreamSettings()
        self._last: tuple[int, str, tuple[int, int]] | None = None

    def check(self, stamp_ns: int, frame_id: str, size: tuple[int, int]) -> ResetCause | None:
        """The reason this frame starts a new stream, or None; remembers the frame."""
        last, self._last = self._last, (stamp_ns, frame_id, tuple(size))
        if last is None:
            return None
        last_stamp, last_frame_id, last_size = last
        cause = None
        if stamp_ns < last_stamp:
            cause = ResetCause.STAMP_BACKWARDS
        elif self.settings.max_gap > 0 and stamp_ns - last_stamp > self.settings.max_gap * 1e9:
            cause = ResetCause.TIME_JUMP
        elif frame_id != last_frame_id:
            cause = ResetCause.FRAME_ID
        elif tuple(size) != last_size:
            cause = ResetCause.IMAGE_SIZE
        return cause

    def forget(self) -> None:
        """Accept the next frame as the start of a stream (after an explicit reset)."""
        self._last = None
