"""Publish N frames of (height, width) rgb8 at a rate, best effort, from its own process
(run with or without the Fast DDS profile in the environment, as a camera driver would be).

    python publish_images.py TOPIC COUNT RATE HEIGHT WIDTH [FIRST_STAMP]

Waits until a subscriber has matched (fails loudly after 30 s), then publishes; prints
'published N' and exits.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image


def main() -> int:
    topic, count, rate, height, width = sys.argv[1], *map(float, sys.argv[2:6])
    first_stamp = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    count, height, width = int(count), int(height), int(width)
    rclpy.init()
    node = rclpy.create_node("publish_images")
    publisher = node.create_publisher(
        Image, topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    deadline = time.monotonic() + 30.0
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            print("no subscriber matched within 30 s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    time.sleep(0.5)  # let discovery settle on both sides
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    # Grey squares of a palette colour so the node's colour segmenter finds an object.
    pixels[10:40, 10:40] = (230, 25, 75)
    data = pixels.tobytes()
    start = time.monotonic()
    for index in range(count):
        msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0,
                    step=width * 3, data=data)
        msg.header.frame_id = "camera"
        msg.header.stamp.sec = first_stamp + index // 10
        msg.header.stamp.nanosec = (index % 10) * 100_000_000
        publisher.publish(msg)
        time.sleep(max(0.0, start + (index + 1) / rate - time.monotonic()))
    print(f"published {count}", flush=True)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
