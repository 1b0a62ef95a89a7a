#!/usr/bin/env python3
"""Cost of turning a tracked frame into what the node publishes, per frame of 20 instances.

    .venv/bin/python scripts/bench_messages.py

For 512x512 and 1280x720 frames of 20 tracked instances (ellipses of varied sizes with
ragged edges, test/helpers/shapes.py): the masks' run-length encoding read inside each
instance's box (what the node does) and over whole masks (the same runs), the whole
InstanceMaskArray (frame_to_msg), its serialisation, the label image and the debug overlay
(both also read masks inside their boxes). Median of --repeats calls (overlay: a fifth).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test" / "helpers"))

from rclpy.serialization import serialize_message  # noqa: E402
from shapes import random_tracked_frame  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from metaseg_ros.masks import encode_rle  # noqa: E402
from metaseg_ros.ros.messages import frame_to_msg  # noqa: E402
from metaseg_ros.visualization import label_image, render_overlay  # noqa: E402


def median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure(height: int, width: int, repeats: int) -> str:
    """One table row for a frame of 20 instances at height x width."""
    frame = random_tracked_frame(0, height, width, 20)
    instances = frame.instances
    assert all(np.array_equal(encode_rle(i.mask, i.bbox), encode_rle(i.mask))
               for i in instances)
    boxed = median_ms(lambda: [encode_rle(i.mask, i.bbox) for i in instances], repeats)
    whole = median_ms(lambda: [encode_rle(i.mask) for i in instances], repeats)
    msg = frame_to_msg(frame, Header(frame_id="camera"))
    build = median_ms(lambda: frame_to_msg(frame, Header(frame_id="camera")), repeats)
    serialise = median_ms(lambda: serialize_message(msg), repeats)
    labels = median_ms(lambda: label_image(instances, height, width), repeats)
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    overlay = median_ms(lambda: render_overlay(rgb, instances), max(repeats // 5, 1))
    size_kb = len(serialize_message(msg)) / 1000
    return (f"| {width}x{height} | {boxed:.2f} ms | {whole:.2f} ms | {build:.2f} ms | "
            f"{serialise:.2f} ms | {labels:.2f} ms | {overlay:.1f} ms | {size_kb:.1f} KB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"median of {args.repeats}, 20 instances per frame")
    print("| frame | RLE inside boxes | RLE of whole masks | frame_to_msg | serialise | "
          "label image | overlay | message size |")
    print("|---|---|---|---|---|---|---|---|")
    for height, width in ((512, 512), (720, 1280)):
        print(measure(height, width, args.repeats), flush=True)


if __name__ == "__main__":
    main()
