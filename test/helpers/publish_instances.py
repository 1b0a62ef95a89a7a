"""Child process of test_messages: publishes InstanceMaskArray messages over DDS.

Usage: publish_instances.py TOPIC COUNT. It waits for a subscription to match, publishes
COUNT messages on a reliable publisher keeping all of them, and exits 0 once every one is
acknowledged; it exits 1 with an error on stderr if nothing matched or the
acknowledgements did not come in time.
"""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from shapes import random_tracked_frame
from std_msgs.msg import Header

from metaseg_ros.msg import InstanceMaskArray
from metaseg_ros.ros.messages import frame_to_msg

MATCH_TIMEOUT = 60.0
ACK_TIMEOUT = 60.0


def publish(node, topic: str, count: int) -> str | None:
    """Publish and wait for the acknowledgements; the error, if any."""
    publisher = node.create_publisher(
        InstanceMaskArray, topic, QoSProfile(depth=count, reliability=ReliabilityPolicy.RELIABLE))
    deadline = time.monotonic() + MATCH_TIMEOUT
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            return f"no subscription matched {topic} within {MATCH_TIMEOUT:.0f} s"
        time.sleep(0.05)
    for seed in range(count):
        header = Header(frame_id=f"camera_{seed}")
        header.stamp.sec, header.stamp.nanosec = 1700000000 + seed, 123456789
        publisher.publish(frame_to_msg(random_tracked_frame(seed), header))
    if not publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT)):
        return f"the {count} messages on {topic} were not all acknowledged within " \
               f"{ACK_TIMEOUT:.0f} s"
    return None


def main() -> int:
    topic, count = sys.argv[1], int(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("instance_publisher")
    try:
        error = publish(node, topic, count)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    if error is not None:
        print(f"publish_instances error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
