"""Child process of test_messages: publishes InstanceMaskArray messages over DDS."""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from shapes import random_tracked_frame
from std_msgs.msg import Header

from metaseg_ros.msg import InstanceMaskArray
from metaseg_ros.ros.messages import frame_to_msg


def main() -> None:
    topic, count = sys.argv[1], int(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("instance_publisher")
    publisher = node.create_publisher(
        InstanceMaskArray, topic, QoSProfile(depth=count, reliability=ReliabilityPolicy.RELIABLE))
    deadline = time.monotonic() + 30
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    for seed in range(count):
        header = Header(frame_id=f"camera_{seed}")
        header.stamp.sec, header.stamp.nanosec = 1700000000 + seed, 123456789
        publisher.publish(frame_to_msg(random_tracked_frame(seed), header))
        time.sleep(0.05)
    time.sleep(2.0)  # let reliable delivery finish before the participant goes away
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
