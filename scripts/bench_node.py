"""metaseg_node end to end over DDS: output rate, latency and drops under a camera stream.

    .venv/bin/python scripts/bench_node.py [--rate 15] [--seconds 30] [--size 512]

Starts the node as the launch file does (shipped params and Fast DDS profile, default model),
publishes a synthetic video at `rate` Hz best effort (like a camera driver) for `seconds`,
and reports: images sent, InstanceMaskArray received, output rate, latency from the image's
stamp to the receipt of its masks (median, p95), and the node's own drop counters from
/diagnostics. With the keep-latest slot the latency stays near one processing time however
fast the camera runs; the surplus frames are counted as superseded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=15.0, help="camera rate in Hz")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--backend", default="eager")
    args = parser.parse_args()

    from metaseg_ros.ros.launch_command import (
        LaunchArguments,
        node_command,
        node_environment,
        profile_variables,
    )

    for variable in profile_variables(os.environ.get("ROS_DISTRO", "")):
        os.environ[variable] = str(REPO / "config" / "fastdds_shm.xml")
    os.environ.setdefault("ROS_DOMAIN_ID", str(120 + os.getpid() % 50))

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
    from metaseg_ros.image_codec import rgb_to_image_fields
    from metaseg_ros.msg import InstanceMaskArray

    frames = SyntheticVideoGenerator(SyntheticConfig(image_size=(args.size, args.size),
                                                     num_frames=24), seed=3).clip(0, range(24))
    launch = LaunchArguments(image="/bench/image", namespace="bench", backend=args.backend)
    executable = shutil.which("metaseg_node", path=str(Path(sys.executable).parent))
    node = subprocess.Popen(node_command(launch, executable, Path(tempfile.mkdtemp())),
                            env=node_environment(launch), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    rclpy.init()
    probe = rclpy.create_node("bench_node_camera")
    latencies: list[float] = []
    arrivals: list[float] = []
    diagnostics: dict[str, str] = {}

    def on_instances(msg: InstanceMaskArray) -> None:
        sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies.append((time.time_ns() - sent) / 1e6)
        arrivals.append(time.monotonic())

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "/bench/" in status.name:
                diagnostics.update({kv.key: kv.value for kv in status.values})

    probe.create_subscription(InstanceMaskArray, "/bench/instances", on_instances,
                              QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    publisher = probe.create_publisher(
        Image, "/bench/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        deadline = time.monotonic() + 300
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(probe, timeout_sec=0.1)
        for _ in range(20):  # warm-up frames, not measured
            publisher.publish(Image(**rgb_to_image_fields(frames.frames[0])))
            rclpy.spin_once(probe, timeout_sec=0.2)
        end_warmup = time.monotonic() + 10
        while not latencies and time.monotonic() < end_warmup:
            rclpy.spin_once(probe, timeout_sec=0.1)
        latencies.clear()
        arrivals.clear()
        received_before = int(diagnostics.get("frames_received", 0))
        superseded_before = int(diagnostics.get("dropped_superseded", 0))
        sent = 0
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            msg = Image(**rgb_to_image_fields(frames.frames[sent % frames.num_frames]))
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
            publisher.publish(msg)
            sent += 1
            next_time = start + sent / args.rate
            while time.monotonic() < next_time:
                rclpy.spin_once(probe, timeout_sec=max(0.0, next_time - time.monotonic()))
        settle = time.monotonic() + 5
        while time.monotonic() < settle:
            rclpy.spin_once(probe, timeout_sec=0.1)
    finally:
        probe.destroy_node()
        rclpy.try_shutdown()
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
    ordered = sorted(latencies)
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    print(f"camera {args.rate:g} Hz, {args.size}x{args.size}, {args.seconds:g} s, backend "
          f"{args.backend}: sent {sent}, node received "
          f"{int(diagnostics.get('frames_received', 0)) - received_before}, published "
          f"{len(latencies)} ({rate:.2f} Hz), superseded "
          f"{int(diagnostics.get('dropped_superseded', 0)) - superseded_before}, latency median "
          f"{statistics.median(ordered):.0f} ms, p95 {ordered[int(0.95 * (len(ordered) - 1))]:.0f}"
          " ms")


if __name__ == "__main__":
    main()
