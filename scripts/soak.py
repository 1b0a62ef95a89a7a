#!/usr/bin/env python3
"""Soak test: many frames through metaseg_node over DDS, watching memory, latency and drops.

    .venv/bin/python scripts/soak.py --frames 10000 --json artifacts/soak.json

Starts the node as the launch file does (shipped parameters and Fast DDS profile, the shipped
`tiny` model on --backend, reliable input), then sends small synthetic frames as fast as the
node answers them (each frame is sent when the previous one's InstanceMaskArray arrived, so
none waits in the keep-latest slot), and records:

- the node process's resident memory (VmRSS from /proc) every --sample frames;
- the latency of every frame (sent -> its InstanceMaskArray received);
- the node's own counters from /diagnostics at the end.

Verdicts (printed, and in the JSON): RSS growth after warm-up < 2 %; median latency of the
last 1000 frames within 10 % of the first 1000 after warm-up; every frame accounted for
(sent = received by the node + lost in transport; received = processed + dropped by cause).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COUNTERS = ("frames_received", "frames_processed", "dropped_superseded",
            "dropped_invalid_input", "dropped_processing_error", "dropped_at_stop",
            "frames_lost_in_transport")


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1000, help="frames before the baselines")
    parser.add_argument("--window", type=int, default=1000, help="frames per latency window")
    parser.add_argument("--sample", type=int, default=100, help="frames between RSS samples")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per frame at most")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from metaseg_ros.ros.launch_command import (
        LaunchArguments,
        node_command,
        node_environment,
        profile_variables,
    )

    for variable in profile_variables(os.environ.get("ROS_DISTRO", "")):
        os.environ[variable] = str(REPO / "config" / "fastdds_shm.xml")
    os.environ.setdefault("ROS_DOMAIN_ID", str(170 + os.getpid() % 50))

    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
    from metaseg_ros.image_codec import rgb_to_image_fields
    from metaseg_ros.msg import InstanceMaskArray

    work = Path(tempfile.mkdtemp(prefix="metaseg_soak_"))
    params = yaml.safe_load((REPO / "config" / "metaseg.yaml").read_text())
    params["/**"]["ros__parameters"].update(input_reliability="reliable", input_depth=1)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    launch = LaunchArguments(image="/soak/image", namespace="soak", backend=args.backend,
                             params_file=str(work / "params.yaml"))
    executable = shutil.which("metaseg_node", path=str(Path(sys.executable).parent))
    log = (work / "node.log").open("w")
    node = subprocess.Popen(node_command(launch, executable, work), env=node_environment(launch),
                            stdout=log, stderr=subprocess.STDOUT)
    video = SyntheticVideoGenerator(SyntheticConfig(image_size=tuple(args.size), num_frames=24),
                                    seed=3).clip(0, range(24))
    rclpy.init()
    probe = rclpy.create_node("soak_camera")
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publisher = probe.create_publisher(Image, "/soak/image", reliable)
    answered = threading.Event()
    answers: dict[int, float] = {}
    counters: dict[str, str] = {}

    def on_instances(msg: InstanceMaskArray) -> None:
        answers[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = \
            time.monotonic()
        answered.set()

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("/soak/metaseg_node"):
                counters.update({kv.key: kv.value for kv in status.values})

    probe.create_subscription(InstanceMaskArray, "/soak/instances", on_instances, reliable)
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    latencies, rss, unanswered = [], [], 0
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 300
        while publisher.get_subscription_count() == 0:
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start; see {work / 'node.log'}")
            time.sleep(0.1)
        for index in range(args.frames):
            msg = Image(**rgb_to_image_fields(video.frames[index % len(video.frames)]))
            stamp = 1_000_000_000 + index * 100_000_000  # 10 Hz stamps, never backwards
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            msg.header.frame_id = "soak_camera"
            answered.clear()
            sent = time.monotonic()
            publisher.publish(msg)
            end = sent + args.timeout
            while stamp not in answers and time.monotonic() < end:
                answered.wait(0.5)
                answered.clear()
            if stamp in answers:
                latencies.append((answers[stamp] - sent) * 1e3)
            else:
                unanswered += 1
            if index % args.sample == 0 or index == args.frames - 1:
                rss.append((index, rss_kib(node.pid)))
            if index and index % 1000 == 0:
                print(f"{index} frames, {time.monotonic() - started:.0f} s, "
                      f"latency median {statistics.median(latencies[-1000:]):.1f} ms, "
                      f"RSS {rss[-1][1] / 1024:.1f} MiB", flush=True)
        time.sleep(3.0)  # let the last diagnostics report arrive
    finally:
        node.send_signal(signal.SIGINT)
        exit_code = node.wait(timeout=60)
        executor.shutdown(timeout_sec=2)
        probe.destroy_node()
        rclpy.shutdown()
    result = summarize(args, latencies, rss, unanswered, counters, exit_code,
                       time.monotonic() - started)
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


def summarize(args: argparse.Namespace, latencies: list[float], rss: list[tuple[int, int]],
              unanswered: int, counters: dict[str, str], exit_code: int,
              seconds: float) -> dict:
    """The verdicts and the figures behind them."""
    warm = [kib for index, kib in rss if index >= args.warmup] or [kib for _, kib in rss]
    first = latencies[args.warmup:args.warmup + args.window] or latencies
    last = latencies[-args.window:]
    counts = {key: int(counters.get(key, -1)) for key in COUNTERS}
    dropped = sum(counts[key] for key in COUNTERS[2:6])
    accounted = (counts["frames_received"] == counts["frames_processed"] + dropped
                 and args.frames == counts["frames_received"] + counts["frames_lost_in_transport"]
                 and unanswered == 0)
    rss_growth = (warm[-1] - warm[0]) / warm[0]
    latency_change = statistics.median(last) / statistics.median(first) - 1
    return {
        "frames": args.frames, "size": list(args.size), "backend": args.backend,
        "seconds": round(seconds, 1), "frames_per_second": round(args.frames / seconds, 2),
        "rss_mib_after_warmup": round(warm[0] / 1024, 1), "rss_mib_end": round(warm[-1] / 1024, 1),
        "rss_growth": round(rss_growth, 4),
        "latency_ms_median_first_window": round(statistics.median(first), 2),
        "latency_ms_median_last_window": round(statistics.median(last), 2),
        "latency_change": round(latency_change, 4), "unanswered": unanswered,
        "node_counters": counts, "node_exit_code": exit_code,
        "rss_samples": rss,
        "checks": {"rss_growth_below_2_percent": rss_growth < 0.02,
                   "latency_within_10_percent": abs(latency_change) <= 0.10,
                   "every_frame_accounted_for": accounted, "clean_exit": exit_code == 0},
        "passed": rss_growth < 0.02 and abs(latency_change) <= 0.10 and accounted
                  and exit_code == 0,
    }


if __name__ == "__main__":
    sys.exit(main())
