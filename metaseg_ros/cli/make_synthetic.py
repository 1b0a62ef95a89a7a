"""`python -m metaseg_ros.cli.make_synthetic`: write a synthetic split to disk.

    python -m metaseg_ros.cli.make_synthetic --output data/synthetic_val --format youtube_vis \
        --videos 40 --first-video 100000 --seed 0

youtube_vis: JPEGImages/<video>/*.jpg + instances.json (uncompressed RLE);
davis: JPEGImages/480p, Annotations/480p (palette PNGs), ImageSets/2017/<split>.txt and
davis_semantics.json. Both read back with metaseg_ros.data (exact masks).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from metaseg_ros.data.davis import write_davis
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.data.ytvis import write_youtube_vis


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the videos and write them in the chosen format."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--format", choices=("youtube_vis", "davis"), default="youtube_vis")
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--first-video", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512),
                        metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--split", default="val", help="DAVIS ImageSets list name")
    args = parser.parse_args(argv)
    source = SyntheticVideoSource(args.videos, SyntheticConfig(image_size=tuple(args.size),
                                                               num_frames=args.frames),
                                  seed=args.seed, first_video=args.first_video)
    if args.format == "youtube_vis":
        path = write_youtube_vis(source, args.output)
    else:
        path = write_davis(source, args.output, split=args.split)
    print(f"wrote {len(source)} videos of {args.frames} frames to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
