"""metaseg-make-bag: a video file or an image folder as a ROS 2 bag, for metaseg-replay.

    metaseg-make-bag VIDEO_OR_IMAGE_DIR --output BAG [--rate HZ] [--frame-id F]
        [--encoding rgb8|bgr8|jpeg] [--storage mcap|sqlite3] [--gt-davis DIR | --gt-ytvis JSON]

Video files are decoded with PyAV (any format FFmpeg reads); image folders are read in name
order. Ground truth of the same frames (DAVIS palette PNGs, or one video of a YouTube-VIS
JSON, matched by frame number) is written as InstanceMaskArray on /ground_truth/instances.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from metaseg_ros.data.bag_format import DEFAULT_GT_TOPIC, DEFAULT_IMAGE_TOPIC, STORAGES
from metaseg_ros.data.footage import ENCODINGS, MakeBagOptions, make_bag, open_footage
from metaseg_ros.data.frame_truth import DavisTruth, YouTubeVisTruth
from metaseg_ros.user_errors import ArgumentParser, run_command


def build_parser() -> ArgumentParser:
    """The command-line interface."""
    parser = ArgumentParser(prog="metaseg-make-bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="video file or folder of images")
    parser.add_argument("--output", type=Path, required=True, help="the bag to write")
    parser.add_argument("--rate", type=float,
                        help="frames per second (default: the video's, 10 for images)")
    parser.add_argument("--frame-id", default="camera", help="header frame_id")
    parser.add_argument("--encoding", choices=ENCODINGS, default="rgb8",
                        help="rgb8/bgr8: sensor_msgs/Image; jpeg: CompressedImage")
    parser.add_argument("--storage", choices=STORAGES, default="mcap")
    parser.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC)
    parser.add_argument("--gt-topic", default=DEFAULT_GT_TOPIC)
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument("--gt-davis", type=Path, help="DAVIS annotation PNGs (or dataset root)")
    truth.add_argument("--gt-ytvis", type=Path, help="YouTube-VIS JSON")
    parser.add_argument("--gt-class", default="object",
                        help="class name of DAVIS objects without davis_semantics.json")
    parser.add_argument("--max-frames", type=int, help="write at most this many frames")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors are one line on stderr and exit code 2."""
    return run_command("metaseg-make-bag", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    options = MakeBagOptions(rate=args.rate, frame_id=args.frame_id, encoding=args.encoding,
                             storage=args.storage, image_topic=args.image_topic,
                             gt_topic=args.gt_topic, max_frames=args.max_frames)
    footage = open_footage(args.input)
    truth = None
    if args.gt_davis:
        truth = DavisTruth(args.gt_davis, footage.name, args.gt_class)
    elif args.gt_ytvis:
        truth = YouTubeVisTruth(args.gt_ytvis, footage.name)
    made = make_bag(footage, args.output, options, truth)
    annotated = f", ground truth on {made.annotated_frames} frames ({args.gt_topic})" \
        if truth is not None else ""
    print(f"make-bag: wrote {made.frames} frames at {made.rate:g} Hz to {made.path} "
          f"({args.image_topic}, {args.encoding}, {args.storage}){annotated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
