"""Replay publishes what the node publishes: the same bag frames sent to metaseg_node over real
DDS and replayed with metaseg-replay (same parameters file: the shipped tiny weights on eager
PyTorch with one thread, a deterministic backend) give equal InstanceMaskArray, label image
and overlay messages, field by field."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy")
from node_runner import NodeProcess
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from ros_probe import Probe
from sensor_msgs.msg import Image

from metaseg_ros.cli.replay import main as replay_main
from metaseg_ros.data.bag_access import BagReader
from metaseg_ros.data.bag_writer import write_bag
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.msg import InstanceMaskArray

STARTUP_TIMEOUT = 240.0
FRAME_TIMEOUT = 120.0
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
FRAMES = 4
SETTINGS = {"backend": "eager", "num_threads": 1, "input_reliability": "reliable",
            "input_depth": 10, "score_threshold": 0.0, "max_instances": 5,
            "tracker.birth_score": 0.0, "tracker.min_score": 0.0, "tracker.confirm_hits": 1}


def test_replay_messages_equal_the_nodes_over_dds(tmp_path: Path, rclpy_context):
    source = SyntheticVideoSource(1, SyntheticConfig(image_size=(96, 128), num_frames=FRAMES),
                                  seed=11)
    bag = write_bag(source, tmp_path / "bags", storage="mcap") / source.video_name(0)
    with BagReader(bag) as reader:
        images = [deserialize_message(bytes(raw.data), Image)
                  for raw in reader.messages(["/camera/image_raw"])]
    assert len(images) == FRAMES

    node = NodeProcess(tmp_path, SETTINGS, image="/eq/camera", namespace="eq")
    probe = Probe("replay_equality_probe")
    topics = {"/eq/instances": InstanceMaskArray, "/eq/instance_labels": Image,
              "/eq/overlay": Image}
    try:
        node.wait_for_output("listening on", STARTUP_TIMEOUT)
        for topic, kind in topics.items():
            probe.record(kind, topic, RELIABLE)
        publisher = probe.node.create_publisher(Image, "/eq/camera", RELIABLE)
        probe.wait_for(lambda: publisher.get_subscription_count() > 0
                       and all(probe.node.count_publishers(t) for t in topics), 60,
                       "the node's topics")
        probe.wait_for(lambda: all(probe.node.get_publishers_info_by_topic(t)
                                   for t in topics), 30, "publishers")

        def answered(stamp) -> bool:
            return all(any(m.header.stamp == stamp for m in probe.messages(t)) for t in topics)

        for image in images:  # one at a time: the keep-latest slot drops nothing
            publisher.publish(image)
            probe.wait_for(lambda image=image: answered(image.header.stamp), FRAME_TIMEOUT,
                           "the node's answer")
        published = {t: {(m.header.stamp.sec, m.header.stamp.nanosec): m
                         for m in probe.messages(t)} for t in topics}
    finally:
        probe.close()
        assert node.stop() == 0, "\n".join(node.output)

    params = next(tmp_path.glob("metaseg_test_params.yaml"))
    assert replay_main([str(bag), "--output", str(tmp_path / "replay"), "--params-file",
                        str(params), "--namespace", "eq", "--labels", "--overlay",
                        "--no-video", "--no-progress"]) == 0
    replayed: dict[str, list] = {t: [] for t in topics}
    with BagReader(tmp_path / "replay" / "results") as reader:
        for raw in reader.messages(topics):
            replayed[raw.topic].append(deserialize_message(bytes(raw.data), topics[raw.topic]))
    instances_seen = 0
    for topic, messages in replayed.items():
        assert len(messages) == FRAMES, topic
        for message in messages:
            node_message = published[topic][(message.header.stamp.sec,
                                             message.header.stamp.nanosec)]
            assert message == node_message, f"{topic} differs at {message.header.stamp}"
            instances_seen += len(getattr(message, "instances", ()))
    assert instances_seen > 0  # the model published instances: the comparison means something
