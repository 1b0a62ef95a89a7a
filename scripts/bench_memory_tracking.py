"""How the model's memory and the tracker work together, measured on the held-out split.

    .venv/bin/python scripts/bench_memory_tracking.py --checkpoint metaseg_ros/weights/metaseg_tiny

Runs the online pipeline (MetaSegSegmenter + Tracker) over held-out synthetic videos in
several variants and prints video mask AP, IDF1, HOTA and ID switches for each:

- memory on, tracker defaults (the shipped configuration);
- memory on, plus the tracker's query-slot continuity term (`query_slot_weight`): the
  decoder query that produced a track's last detection is preferred for it;
- memory off: the model's memory is emptied before every frame (the image Mask2Former);
- memory on, the tracker without query embeddings (mask IoU and class only).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.inference.backends import EagerRunner
from metaseg_ros.inference.postprocess import PostprocessSettings
from metaseg_ros.inference.segmenter import MetaSegSegmenter
from metaseg_ros.model.checkpoint import load_checkpoint
from metaseg_ros.results import FrameDetections
from metaseg_ros.tracking import TrackerConfig
from metaseg_ros.train.evaluate import evaluate_segmenter


class MemorylessSegmenter:
    """The same segmenter with its memory emptied before every frame."""

    def __init__(self, inner: MetaSegSegmenter) -> None:
        self.inner = inner

    @property
    def class_names(self):
        return self.inner.class_names

    def step(self, image: np.ndarray) -> FrameDetections:
        self.inner.reset()
        return self.inner.step(image)

    def reset(self) -> None:
        self.inner.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--first-video", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_checkpoint(args.checkpoint).eval()
    size = tuple(model.config.image_size)
    source = SyntheticVideoSource(args.videos, SyntheticConfig(image_size=size,
                                                               num_frames=args.frames),
                                  seed=0, first_video=args.first_video)
    segmenter = MetaSegSegmenter(EagerRunner(model), PostprocessSettings())
    defaults = TrackerConfig()
    variants = [
        ("memory on, tracker defaults", segmenter, defaults),
        ("memory on, + query-slot term 0.3", segmenter,
         dataclasses.replace(defaults, query_slot_weight=0.3)),
        ("memory off (reset every frame)", MemorylessSegmenter(segmenter), defaults),
        ("memory on, tracker without embeddings", segmenter,
         dataclasses.replace(defaults, embedding_weight=0.0)),
    ]
    print(f"{args.videos} held-out synthetic videos (first {args.first_video}), "
          f"{args.frames} frames of {size[1]}x{size[0]}, checkpoint {args.checkpoint}")
    print("| variant | video AP | IDF1 | HOTA | ID switches | MOTA |")
    print("|---|---|---|---|---|---|")
    for name, variant, tracker in variants:
        result = evaluate_segmenter(variant, source, tracker)
        print(f"| {name} | {result.video_ap:.3f} | {result.idf1:.3f} | {result.hota:.3f} | "
              f"{result.id_switches} | {result.mota:.3f} |", flush=True)


if __name__ == "__main__":
    main()
