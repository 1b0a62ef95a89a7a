"""A reference for the memory's gain on degraded frames (issue 14): every frame with an
image degradation replaced by the last frame without one, told by the generator's tags.

    .venv/bin/python scripts/bench_hold_last_good.py \
        --checkpoints metaseg_ros/weights/metaseg_tiny --videos 40 --threads 2

An oracle, not a method: the node cannot read the tags. It shows what standing in the
last good frame for a damaged one gives (objects keep moving meanwhile, the ground truth
is the current frame's). Not a ceiling: a memory can also use what the damaged frame
still shows (a dropout frame keeps half its rows). Scene events (occluder, object blur,
re-entry) stay as they are: they are part of the scene, not of the image. Same degraded
split, tracker and scores as scripts/bench_memory_ab.py; memory on and off, each on the
frames as they are and held.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from metaseg_ros.data.types import ClipSample
from metaseg_ros.eval.memory_ab import (
    SCORE_HEADER,
    MemorylessSegmenter,
    add_split_arguments,
    hold_last_good,
    run_videos,
    score_cells,
    split_from_arguments,
    split_scores,
)
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.checkpoint import load_checkpoint


def held_frames(clip: ClipSample) -> list[np.ndarray]:
    """The clip's frames with hold_last_good applied (a clip without tags as it is)."""
    return hold_last_good(clip.frames, clip.frame_tags or ("",) * clip.num_frames)


def main() -> None:
    """Score every checkpoint on the degraded split, frames as they are and held."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", required=True)
    add_split_arguments(parser, ["degraded"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    rows = []
    for checkpoint in args.checkpoints:
        model = load_checkpoint(checkpoint).eval()
        segmenter = StreamingSegmenter(EagerRunner(model), PostprocessSettings())
        modes = {"on": segmenter, "off": MemorylessSegmenter(segmenter, cache=True)}
        source = split_from_arguments(args, "degraded", model.config.image_size,
                                      model.class_names)
        runs = {"as they are": run_videos(modes, source, args.videos),
                "held": run_videos(modes, source, args.videos, frames_of=held_frames)}
        rows += [(checkpoint, mode, frames,
                  split_scores(runs[frames][mode], len(model.class_names)))
                 for mode in modes for frames in runs]
        print(f"{checkpoint}: {time.perf_counter() - started:.0f} s", flush=True)

    print(f"\n{args.videos} degraded videos (seed {args.seed}, first "
          f"{args.degraded_first_video}, DEGRADED_PRESET), {args.frames} frames; held = "
          "each image-degraded frame replaced by the last one without\n")
    print(f"| checkpoint | memory | frames | {SCORE_HEADER} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for checkpoint, mode, frames, scores in rows:
        print(f"| {checkpoint} | {mode} | {frames} | " + " | ".join(score_cells(scores)) + " |")
    print(f"\n{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
