"""Memory on vs memory off, and one checkpoint vs another, on held-out synthetic splits
(issue 14, section 3).

    .venv/bin/python scripts/bench_memory_ab.py \
        --checkpoints runs/tiny_memory/final/model metaseg_ros/weights/metaseg_tiny \
        --videos 40 --threads 1 --json runs/memory_ab.json

Splits (generator seed 0, 24 frames at the model's input size; disjoint from training,
videos 0..399, and from the validation split 300000.. the settings were chosen on):
- clean: videos 100000.. (the model card's held-out split), no degradation;
- degraded: videos 200000.. with DEGRADED_PRESET (as scripts/bench_degradations.py).

Each checkpoint runs through the online pipeline (StreamingSegmenter + Tracker with
defaults) twice: memory on, and memory off (the memory emptied before every frame); same
weights, same tracker. Printed per checkpoint, split and memory mode: video mask AP, AP50,
J&F, J&F on the degraded frames (tag not empty), IDF1, ID switches; then memory on minus
off. For a validation run give e.g. --splits degraded --degraded-first-video 300000.
With --blocks N each split runs N consecutive blocks of --videos videos, each scored on its
own, and the mean of on minus off over the blocks is printed too: on 40 videos the J&F
gain moves by a factor of four from block to block (docs/benchmarks.md), so a verdict on
a recipe reads --blocks 3.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import torch

from metaseg_ros.eval.memory_ab import (
    SCORE_HEADER,
    MemorylessSegmenter,
    SplitScores,
    add_split_arguments,
    difference_cells,
    mean_differences,
    run_videos,
    score_cells,
    score_differences,
    split_from_arguments,
    split_scores,
)
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.checkpoint import load_checkpoint


def main() -> None:
    """Run every checkpoint on every split and block, memory on and off; print markdown
    tables."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", required=True)
    add_split_arguments(parser, ["clean", "degraded"])
    parser.add_argument("--blocks", type=int, default=1,
                        help="consecutive blocks of --videos videos per split, each scored "
                             "on its own, then the mean of on minus off (default 1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write every score here")
    args = parser.parse_args()
    if args.blocks < 1 or args.videos < 1:
        parser.error("--blocks and --videos must be at least 1")
    torch.set_num_threads(args.threads)

    results: dict[tuple[str, str, str, str], SplitScores] = {}
    started = time.perf_counter()
    blocks = blocks_of(args)
    for checkpoint in args.checkpoints:
        model = load_checkpoint(checkpoint).eval()
        segmenter = StreamingSegmenter(EagerRunner(model), PostprocessSettings())
        modes = {"on": segmenter, "off": MemorylessSegmenter(segmenter, cache=True)}
        for split in args.splits:
            for block_args in blocks:
                block = block_label(block_args, split)
                source = split_from_arguments(block_args, split, model.config.image_size,
                                              model.class_names)
                for mode, run in run_videos(modes, source, args.videos).items():
                    results[checkpoint, split, block, mode] = split_scores(
                        run, len(model.class_names))
                print(f"{checkpoint} {split} {block}: {time.perf_counter() - started:.0f} s",
                      flush=True)

    print(f"\n{args.videos} videos per split and block (seed {args.seed}; degraded: "
          f"DEGRADED_PRESET), {args.frames} frames; memory off = emptied before every frame\n")
    print(f"| checkpoint | split | videos | memory | {SCORE_HEADER} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (checkpoint, split, block, mode), scores in results.items():
        print(f"| {checkpoint} | {split} | {block} | {mode} | "
              + " | ".join(score_cells(scores)) + " |")
    print("\nmemory on minus off:\n")
    print(f"| checkpoint | split | videos | {SCORE_HEADER} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        for split in args.splits:
            labels = [block_label(block_args, split) for block_args in blocks]
            differences = [score_differences(results[checkpoint, split, label, "on"],
                                             results[checkpoint, split, label, "off"])
                           for label in labels]
            for label, difference in zip(labels, differences, strict=True):
                print(f"| {checkpoint} | {split} | {label} | "
                      + " | ".join(difference_cells(difference)) + " |")
            if args.blocks > 1:
                print(f"| {checkpoint} | {split} | mean of {args.blocks} blocks (ID switches: "
                      "total) | " + " | ".join(difference_cells(mean_differences(differences)))
                      + " |")
    print(f"\n{time.perf_counter() - started:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "scores": [
                {"checkpoint": c, "split": s, "videos": b, "memory": m, **asdict(v)}
                for (c, s, b, m), v in results.items()]}, handle, indent=1)


def blocks_of(args: argparse.Namespace) -> list[argparse.Namespace]:
    """The split options of each block: the first videos moved on by --videos per block."""
    return [argparse.Namespace(**{
        **vars(args),
        "clean_first_video": args.clean_first_video + index * args.videos,
        "degraded_first_video": args.degraded_first_video + index * args.videos})
        for index in range(args.blocks)]


def block_label(block_args: argparse.Namespace, split: str) -> str:
    """The videos of a block of a split, e.g. "200040..200079"."""
    first = {"clean": block_args.clean_first_video,
             "degraded": block_args.degraded_first_video}[split]
    return f"{first}..{first + block_args.videos - 1}"


if __name__ == "__main__":
    main()
