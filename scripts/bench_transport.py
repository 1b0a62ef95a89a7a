"""Delivery of 512x512 rgb8 images between processes: Fast DDS defaults vs fastdds_shm.xml.

    .venv/bin/python scripts/bench_transport.py [--count 300] [--rate 100]

For each profile (none = Fast DDS defaults, shm = the shipped profile) and reliability, a
child process publishes `count` images at `rate` Hz and this process receives them; prints
the fraction delivered and the median / 95th percentile latency (publish stamp to receipt,
one clock). Each profile runs in fresh processes: Fast DDS reads the profile at start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "fastdds_shm.xml"


def publisher(topic: str, count: int, rate: float, reliable: bool) -> None:
    """Child: wait for the subscriber, then publish `count` stamped images at `rate` Hz."""
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_transport_publisher")
    qos = QoSProfile(depth=1 if not reliable else 10, reliability=ReliabilityPolicy.RELIABLE
                     if reliable else ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(Image, topic, qos)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    data = np.random.default_rng(0).integers(0, 256, 512 * 512 * 3, dtype=np.uint8).tobytes()
    msg = Image(height=512, width=512, encoding="rgb8", step=512 * 3, data=data)
    period = 1.0 / rate
    start = time.monotonic()
    for index in range(count):
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        msg.header.frame_id = str(index)
        pub.publish(msg)
        time.sleep(max(0.0, start + (index + 1) * period - time.monotonic()))
    time.sleep(2.0)
    node.destroy_node()
    rclpy.shutdown()


def receiver(topic: str, count: int, reliable: bool) -> dict[str, float]:
    """Child: start the publisher child, receive, summarise."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_transport_receiver")
    latencies: list[float] = []

    def on_image(msg: Image) -> None:
        sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies.append((time.time_ns() - sent) / 1e6)

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if reliable
                     else ReliabilityPolicy.BEST_EFFORT)
    node.create_subscription(Image, topic, on_image, qos)
    child = subprocess.Popen([sys.executable, __file__, "--role", "publisher", "--topic", topic,
                              "--count", str(count), "--rate", str(ARGS.rate)]
                             + (["--reliable"] if reliable else []))
    while child.poll() is None:
        rclpy.spin_once(node, timeout_sec=0.05)
    for _ in range(20):
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
    ordered = sorted(latencies)
    return {"delivered": len(latencies) / count,
            "median_ms": statistics.median(ordered) if ordered else float("nan"),
            "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] if ordered else float("nan")}


def main() -> None:
    rows = []
    for profile in ("none", "shm"):
        for reliable in (False, True):
            env = {k: v for k, v in os.environ.items()
                   if k not in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")}
            if profile == "shm":
                env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
            env["ROS_DOMAIN_ID"] = str(150 + os.getpid() % 50)
            result = subprocess.run(
                [sys.executable, __file__, "--role", "receiver", "--topic", "/bench/image",
                 "--count", str(ARGS.count), "--rate", str(ARGS.rate)]
                + (["--reliable"] if reliable else []),
                env=env, capture_output=True, text=True, timeout=600)
            summary = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append((profile, "reliable" if reliable else "best_effort", summary))
    print(f"512x512 rgb8, {ARGS.count} images at {ARGS.rate:g} Hz between two processes")
    print("| profile | reliability | delivered | median ms | p95 ms |")
    print("|---|---|---|---|---|")
    for profile, reliability, s in rows:
        print(f"| {profile} | {reliability} | {s['delivered']:.1%} | {s['median_ms']:.1f} | "
              f"{s['p95_ms']:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=("main", "publisher", "receiver"), default="main")
    parser.add_argument("--topic", default="/bench/image")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--reliable", action="store_true")
    ARGS = parser.parse_args()
    if ARGS.role == "publisher":
        publisher(ARGS.topic, ARGS.count, ARGS.rate, ARGS.reliable)
    elif ARGS.role == "receiver":
        print(json.dumps(receiver(ARGS.topic, ARGS.count, ARGS.reliable)))
    else:
        main()
