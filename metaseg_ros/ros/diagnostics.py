"""What the node reports on /diagnostics: counters, rates, latency, and a level with a reason.

Levels (the README lists them):
  ERROR  no input for `stream.stale_after` seconds after frames had arrived; or processing
         keeps failing (the last FAILING_STREAK frames all failed)
  WARN   running with random weights; the backend fell back while running; frames lost in
         transport recently; processing slower than the input (output rate below the input
         rate by more than RATE_MARGIN, or median latency above the input frame period);
         frames dropped as invalid or failed recently; no input yet
  OK     otherwise
Counters are cumulative; "recently" means within the last RECENT_S seconds.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from metaseg_ros.inference.pipeline import PipelineInfo

WINDOW = 200          # frames kept for latency, rates and stage medians
RECENT_S = 10.0       # seconds within which losses and drops count as recent
RATE_MARGIN = 0.2     # output rate below (1 - margin) x input rate: falling behind
FAILING_STREAK = 5    # consecutive failed frames: ERROR
OPTIONAL_OUTPUTS = ("instance_labels", "overlay", "image_markers", "markers")  # on demand
LOST_WARN_FRACTION = 0.05  # recent transport losses above this share of frames: WARN

OK, WARN, ERROR = 0, 1, 2


@dataclass
class NodeStats:
    """Counters and bounded windows (nothing grows with time)."""

    received: int = 0
    processed: int = 0
    dropped_superseded: int = 0
    dropped_invalid: int = 0
    dropped_failed: int = 0
    dropped_at_stop: int = 0
    lost_in_transport: int = 0
    failing_streak: int = 0
    instances_last_frame: int = 0
    live_tracks: int = -1
    memory_fill: int = -1
    # Depth (depth.enabled): frames given a depth image, frames without one within the
    # tolerance, depth images or camera_info that could not be used.
    depth_enabled: bool = False
    depth_matched: int = 0
    depth_unmatched: int = 0
    depth_invalid: int = 0
    # Frames that went through the network in one batch with other cameras' frames.
    batched: int = 0
    # Messages of the optional outputs published (only while someone subscribes), by topic.
    published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPTIONAL_OUTPUTS, 0))
    received_times: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    processed_times: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    stage_ms: dict[str, deque[float]] = field(default_factory=dict)
    # (time, count) of drops and transport losses, for "recently"
    recent_drops: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=WINDOW))
    recent_lost: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def on_received(self, now: float) -> None:
        """A message arrived (executor thread)."""
        self.received += 1
        self.received_times.append(now)

    def on_lost(self, count: int, now: float) -> None:
        """The middleware reports `count` more messages lost before they reached us."""
        self.lost_in_transport += count
        self.recent_lost.append((now, count))

    def on_dropped(self, kind: str, now: float) -> None:
        """A frame dropped as 'invalid' (undecodable) or 'failed' (processing error)."""
        if kind == "invalid":
            self.dropped_invalid += 1
        else:
            self.dropped_failed += 1
            self.failing_streak += 1
        self.recent_drops.append((now, 1))

    def on_processed(self, received_at: float, now: float, timings_ms: Mapping[str, float],
                     instances: int, live_tracks: int, memory_fill: int) -> None:
        """One frame processed and published."""
        self.processed += 1
        self.failing_streak = 0
        self.latencies_ms.append((now - received_at) * 1e3)
        self.processed_times.append(now)
        for stage, ms in timings_ms.items():
            self.stage_ms.setdefault(stage, deque(maxlen=WINDOW)).append(ms)
        self.instances_last_frame = instances
        self.live_tracks = live_tracks
        self.memory_fill = memory_fill

    @staticmethod
    def rate(times: deque[float]) -> float | None:
        """Events per second over the window (None with fewer than two)."""
        if len(times) < 2:
            return None
        span = times[-1] - times[0]
        return (len(times) - 1) / span if span > 0 else None

    @staticmethod
    def recent(events: deque[tuple[float, int]], now: float) -> int:
        """How many events in the last RECENT_S seconds."""
        return sum(count for when, count in events if now - when <= RECENT_S)


@dataclass(frozen=True)
class Report:
    """One diagnostics report: level (OK/WARN/ERROR), message and key-values."""

    level: int
    message: str
    values: dict[str, str]


def build_report(stats: NodeStats, info: PipelineInfo, resets: Mapping[str, int],
                 stale_after: float, last_input: float | None, active_since: float,
                 input_topic: str, now: float | None = None) -> Report:
    """The level, the reason and the values for the current state."""
    now = time.monotonic() if now is None else now
    input_rate = stats.rate(stats.received_times)
    output_rate = stats.rate(stats.processed_times)
    latency = statistics.median(stats.latencies_ms) if stats.latencies_ms else None
    silent = now - (last_input if last_input is not None else active_since)
    recent_lost = stats.recent(stats.recent_lost, now)
    recent_frames = sum(1 for t in stats.received_times if now - t <= RECENT_S)
    problems: list[tuple[int, str]] = []
    if last_input is not None and silent > stale_after:
        problems.append((ERROR, f"no input for {silent:.1f} s on {input_topic}"))
    if stats.failing_streak >= FAILING_STREAK:
        problems.append((ERROR, f"the last {stats.failing_streak} frames failed to process"))
    if last_input is None and silent > stale_after:
        problems.append((WARN, f"no input yet on {input_topic} ({silent:.1f} s)"))
    if info.random_weights:
        problems.append((WARN, "running with random weights"))
    if info.fallback_reason:
        problems.append((WARN, f"running on {info.backend} after: {info.fallback_reason}"))
    if recent_lost and recent_lost > LOST_WARN_FRACTION * max(recent_frames + recent_lost, 1):
        problems.append((WARN, f"{recent_lost} frames lost in transport in the last "
                               f"{RECENT_S:.0f} s: give the camera driver the shared-memory "
                               "profile (FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_shm.xml)"
                               " or use input_type: compressed"))
    if input_rate and output_rate and output_rate < (1 - RATE_MARGIN) * input_rate:
        problems.append((WARN, f"processing {output_rate:.1f} Hz of {input_rate:.1f} Hz input "
                               "(the newest frame wins; the rest are dropped)"))
    elif input_rate and latency is not None and latency > 1e3 / input_rate:
        problems.append((WARN, f"latency {latency:.0f} ms exceeds the frame period "
                               f"{1e3 / input_rate:.0f} ms"))
    recent_drops = stats.recent(stats.recent_drops, now)
    if recent_drops:
        problems.append((WARN, f"{recent_drops} frames dropped in the last {RECENT_S:.0f} s "
                               "(invalid input or processing error)"))
    level = max((lvl for lvl, _ in problems), default=OK)
    message = "; ".join(text for lvl, text in problems if lvl == level) if problems else "ok"
    values: dict[str, object] = {
        "frames_received": stats.received,
        "frames_processed": stats.processed,
        "dropped_superseded": stats.dropped_superseded,
        "dropped_invalid_input": stats.dropped_invalid,
        "dropped_processing_error": stats.dropped_failed,
        "dropped_at_stop": stats.dropped_at_stop,
        "frames_lost_in_transport": stats.lost_in_transport,
        "backend": info.backend, "precision": info.precision, "device": info.device,
    }
    if input_rate is not None:
        values["input_rate_hz"] = round(input_rate, 2)
    if output_rate is not None:
        values["output_rate_hz"] = round(output_rate, 2)
    if latency is not None:
        values["latency_ms_median"] = round(latency, 2)
    # A snapshot: the processing thread adds a stage's window at its first frame.
    for stage, times in list(stats.stage_ms.items()):
        values[f"{stage}_ms_median"] = round(statistics.median(times), 3)
    if stats.processed:
        values["instances_last_frame"] = stats.instances_last_frame
    if stats.live_tracks >= 0:
        values["live_tracks"] = stats.live_tracks
    if stats.memory_fill >= 0:
        values["memory_frames_filled"] = stats.memory_fill
    if last_input is not None:
        values["seconds_since_last_input"] = round(now - last_input, 2)
    if stats.depth_enabled:
        values.update(depth_matched=stats.depth_matched, depth_unmatched=stats.depth_unmatched,
                      depth_invalid=stats.depth_invalid)
    if stats.batched:
        values["frames_batched"] = stats.batched
    for topic, count in stats.published.items():
        values[f"{topic}_published"] = count
    for cause, count in sorted(resets.items()):
        values[f"resets_{cause}"] = count
    return Report(level, message, {key: str(value) for key, value in values.items()})
