"""`make demo`: run metaseg_node on a generated clip and show what it publishes.

The node is started exactly as launch/metaseg.launch.py starts it (its own process,
the shipped parameters and Fast DDS profile). This process plays a synthetic video with
exact ground truth (real cut-outs over real backgrounds, metaseg_ros.data.synthetic) on
the image topic, one frame after the other's answer, records the InstanceMaskArray
messages and the overlay images, prints them, and scores the track ids against the
ground truth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from metaseg_ros.ros.launch_command import (
    LaunchArguments,
    node_command,
    node_environment,
    profile_variables,
)

PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_shm.xml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16, help="frames of the clip")
    parser.add_argument("--size", type=int, default=512, help="frame height and width")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated clip")
    parser.add_argument("--checkpoint", default="", help="checkpoint ('' = shipped weights)")
    parser.add_argument("--output", type=Path, default=Path("artifacts/demo"),
                        help="where overlays and the summary are written")
    parser.add_argument("--timeout", type=float, default=240.0,
                        help="seconds to wait for the node to start / answer a frame")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `metaseg-demo` (and `make demo`)."""
    args = parse_args(argv)
    for variable in profile_variables(os.environ.get("ROS_DISTRO", "")):
        os.environ.setdefault(variable, str(PROFILE))

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
    from metaseg_ros.image_codec import rgb_to_image_fields
    from metaseg_ros.msg import InstanceMaskArray

    generator = SyntheticVideoGenerator(
        SyntheticConfig(image_size=(args.size, args.size), num_frames=args.frames), seed=args.seed)
    clip = generator.clip(0, range(args.frames))
    names = ", ".join(generator.config.class_names[c] for c in clip.class_ids)
    print(f"demo: generated {clip.num_frames} frames of {args.size}x{args.size} with "
          f"{len(clip.instance_ids)} objects ({names})")

    executable = shutil.which("metaseg_node", path=str(Path(sys.executable).parent)) or \
        shutil.which("metaseg_node")
    if executable is None:
        print("demo: metaseg_node is not installed (run `make setup`)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="metaseg_demo_"))
    launch = LaunchArguments(image="/demo/camera/image_raw", namespace="demo")
    if args.checkpoint:
        params = work / "params.yaml"
        params.write_text(Path(launch.params_file).read_text().replace(
            'checkpoint: ""', f'checkpoint: "{args.checkpoint}"'))
        launch = LaunchArguments(image=launch.image, namespace="demo", params_file=str(params))
    argv = node_command(launch, executable, work)
    print("demo: starting the node as the launch file does:\n  " + " ".join(argv))
    node = subprocess.Popen(argv, env=node_environment(launch))

    args.output.mkdir(parents=True, exist_ok=True)
    rclpy.init()
    probe = rclpy.create_node("metaseg_demo_player")
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    received: dict[int, InstanceMaskArray] = {}
    overlays: dict[int, Image] = {}
    probe.create_subscription(InstanceMaskArray, "/demo/instances",
                              lambda m: received.__setitem__(m.header.stamp.sec, m), reliable)
    probe.create_subscription(Image, "/demo/overlay",
                              lambda m: overlays.__setitem__(m.header.stamp.sec, m), reliable)
    publisher = probe.create_publisher(Image, "/demo/camera/image_raw", reliable)
    try:
        def connected() -> bool:
            return (publisher.get_subscription_count() > 0
                    and probe.count_publishers("/demo/instances") > 0
                    and probe.count_publishers("/demo/overlay") > 0)

        if not _spin_until(rclpy, probe, connected, args.timeout, node):
            print("demo: the node did not come up", file=sys.stderr)
            return 1
        _spin_until(rclpy, probe, lambda: False, 1.0, node)  # let the node discover us too
        for t in range(clip.num_frames):
            msg = Image(**rgb_to_image_fields(clip.frames[t]))
            msg.header.frame_id = "demo_camera"
            msg.header.stamp.sec = t
            started = time.monotonic()
            publisher.publish(msg)
            if not _spin_until(rclpy, probe, lambda t=t: t in received and t in overlays,
                               args.timeout, node):
                print(f"demo: no answer for frame {t} within {args.timeout:.0f} s",
                      file=sys.stderr)
                return 1
            _print_frame(received[t], time.monotonic() - started)
            _save_overlay(overlays[t], args.output / f"overlay_{t:04d}.png")
    finally:
        probe.destroy_node()
        rclpy.try_shutdown()
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
    summary = _score(clip, received)
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"demo: overlays and summary.json in {args.output}/")
    print("demo: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


def _spin_until(rclpy, node, condition, timeout: float, child: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        rclpy.spin_once(node, timeout_sec=0.05)
        if condition():
            return True
    return False


def _print_frame(msg, seconds: float) -> None:
    parts = [f"#{i.track_id} {i.class_name} {i.score:.2f} "
             f"[{i.bbox.x_offset},{i.bbox.y_offset} {i.bbox.width}x{i.bbox.height}]"
             for i in msg.instances]
    print(f"frame {msg.header.stamp.sec:3d} ({seconds * 1e3:6.0f} ms): "
          f"{len(msg.instances)} instances  " + "; ".join(parts))


def _save_overlay(msg, path: Path) -> None:
    from PIL import Image as PILImage

    rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
    PILImage.fromarray(rgb).save(path)


def _score(clip, received) -> dict:
    """Identity and mask metrics of the published tracks against the clip's ground truth."""
    from metaseg_ros.eval import FrameObjects, hota_metrics, mot_metrics
    from metaseg_ros.ros.messages import decode_instance_mask

    truth, predicted = [], []
    for t in range(clip.num_frames):
        present = clip.masks[t].any(axis=(1, 2))
        truth.append(FrameObjects.from_masks(clip.instance_ids[present], clip.masks[t][present]))
        msg = received[t]
        predicted.append(FrameObjects.from_masks(
            [i.track_id for i in msg.instances],
            [decode_instance_mask(i, msg.height, msg.width) for i in msg.instances]))
    mot = mot_metrics(truth, predicted, similarity="mask")
    hota = hota_metrics(truth, predicted, similarity="mask")
    tracks = {int(i) for frame in predicted for i in frame.ids}
    return {"frames": clip.num_frames, "objects": len(clip.instance_ids),
            "distinct_track_ids": len(tracks), "mask_MOTA": round(mot.mota, 3),
            "mask_IDF1": round(mot.idf1, 3), "id_switches": mot.id_switches,
            "mask_HOTA": round(float(hota.hota), 3)}


if __name__ == "__main__":
    sys.exit(main())
