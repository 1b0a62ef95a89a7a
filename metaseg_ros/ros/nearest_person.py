"""A planner-side consumer of metaseg_node: the latest 3-D position per track id, and the
nearest person (the README shows the class below; test/test_node_depth.py runs it over DDS).

    python -m metaseg_ros.ros.nearest_person [instances topic]

Positions are in the optical frame of the camera that published them (header.frame_id);
transform them with tf2 before mixing several cameras.
"""

from __future__ import annotations

import math
import sys

import rclpy
from geometry_msgs.msg import Point
from rclpy.node import Node

from metaseg_ros.msg import InstanceMaskArray


# README example: begin
class NearestPerson(Node):
    """Keeps the latest 3-D position per track id; prints the nearest person."""

    def __init__(self, topic: str = "instances", max_age: float = 2.0) -> None:
        super().__init__("nearest_person")
        self.latest: dict[int, tuple[str, Point, float]] = {}  # id -> class, position, stamp
        self.max_age = max_age  # s: tracks not seen for longer are forgotten
        self.create_subscription(InstanceMaskArray, topic, self.on_instances, 10)

    def on_instances(self, msg: InstanceMaskArray) -> None:
        now = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        for instance in msg.instances:
            if instance.position_valid:
                self.latest[instance.track_id] = (instance.class_name, instance.position, now)
        self.latest = {i: v for i, v in self.latest.items() if now - v[2] <= self.max_age}
        nearest = self.nearest("person")
        if nearest is not None:
            print(f"nearest person: track {nearest[0]} at {nearest[1]:.2f} m", flush=True)

    def nearest(self, class_name: str) -> tuple[int, float] | None:
        """(track id, distance in m) of the nearest track of `class_name`, if any."""
        found = [(math.dist((p.x, p.y, p.z), (0.0, 0.0, 0.0)), track_id)
                 for track_id, (name, p, _) in self.latest.items() if name == class_name]
        return min(found)[::-1] if found else None
# README example: end


def main(args: list[str] | None = None) -> int:
    """Spin a NearestPerson on the topic given (default: instances) until Ctrl-C."""
    argv = sys.argv[1:] if args is None else args
    rclpy.init()
    node = NearestPerson(argv[0] if argv else "instances")
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
