"""`python -m metaseg_ros.cli.make_synthetic`: write a synthetic split to disk.

    python -m metaseg_ros.cli.make_synthetic --output data/synthetic_val --format youtube_vis \
        --videos 40 --first-video 100000 --seed 0

youtube_vis: JPEGImages/<video>/*.jpg + instances.json (uncompressed RLE);
davis: JPEGImages/480p, Annotations/480p (palette PNGs), ImageSets/2017/<split>.txt and
davis_semantics.json; bag: one ROS 2 bag per video (--bag-storage sqlite3 or mcap) with
sensor_msgs/Image rgb8 (or PNG/JPEG CompressedImage, --bag-images) on /camera/image_raw and
InstanceMaskArray ground truth on /ground_truth/instances. All read back with
metaseg_ros.data (exact masks).
"""

from __future__ import annotations

from collections.abc import Sequence

from metaseg_ros.data.bag_format import STORAGES
from metaseg_ros.data.bag_writer import write_bag
from metaseg_ros.data.davis import write_davis
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.data.ytvis import write_youtube_vis
from metaseg_ros.user_errors import ArgumentParser, run_command


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the videos and write them in the chosen format (user errors: one line, 2)."""
    return run_command("metaseg-make-synthetic", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = ArgumentParser(prog="metaseg-make-synthetic",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--format", choices=("youtube_vis", "davis", "bag"),
                        default="youtube_vis")
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--first-video", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512),
                        metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--split", default="val", help="DAVIS ImageSets list name")
    parser.add_argument("--bag-storage", choices=STORAGES, default="sqlite3")
    parser.add_argument("--bag-images", choices=("raw", "png", "jpeg"), default="raw",
                        help="bag images as sensor_msgs/Image rgb8 or CompressedImage")
    args = parser.parse_args(argv)
    source = SyntheticVideoSource(args.videos, SyntheticConfig(image_size=tuple(args.size),
                                                               num_frames=args.frames),
                                  seed=args.seed, first_video=args.first_video)
    if args.format == "youtube_vis":
        path = write_youtube_vis(source, args.output)
    elif args.format == "davis":
        path = write_davis(source, args.output, split=args.split)
    else:
        compressed = False if args.bag_images == "raw" else args.bag_images
        path = write_bag(source, args.output, storage=args.bag_storage, compressed=compressed)
    print(f"wrote {len(source)} videos of {args.frames} frames to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
