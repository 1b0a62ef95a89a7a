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
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict

import torch

from metaseg_ros.eval.memory_ab import (
    SCORE_COLUMNS,
    SCORE_HEADER,
    MemorylessSegmenter,
    SplitScores,
    add_split_arguments,
    run_videos,
    score_cells,
    split_from_arguments,
    split_scores,
)
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.checkpoint import load_checkpoint


def main() -> None:
    """Run every checkpoint on every split, memory on and off; print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", required=True)
    add_split_arguments(parser, ["clean", "degraded"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write every score here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results: dict[tuple[str, str, str], SplitScores] = {}
    started = time.perf_counter()
    for checkpoint in args.checkpoints:
        model = load_checkpoint(checkpoint).eval()
        segmenter = StreamingSegmenter(EagerRunner(model), PostprocessSettings())
        modes = {"on": segmenter, "off": MemorylessSegmenter(segmenter, cache=True)}
        for split in args.splits:
            source = split_from_arguments(args, split, model.config.image_size,
                                          model.class_names)
            runs = run_videos(modes, source, args.videos)
            for mode, run in runs.items():
                results[checkpoint, split, mode] = split_scores(run, len(model.class_names))
            print(f"{checkpoint} {split}: {time.perf_counter() - started:.0f} s", flush=True)

    print(f"\n{args.videos} videos per split (seed {args.seed}; clean: first "
          f"{args.clean_first_video}; degraded: first {args.degraded_first_video}, "
          f"DEGRADED_PRESET), {args.frames} frames; memory off = emptied before every frame\n")
    print(f"| checkpoint | split | memory | {SCORE_HEADER} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (checkpoint, split, mode), scores in results.items():
        print(f"| {checkpoint} | {split} | {mode} | "
              + " | ".join(score_cells(scores)) + " |")
    print("\nmemory on minus off:\n")
    print(f"| checkpoint | split | {SCORE_HEADER} |")
    print("|---|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        for split in args.splits:
            on, off = results[checkpoint, split, "on"], results[checkpoint, split, "off"]
            cells = []
            for column in SCORE_COLUMNS:
                delta = getattr(on, column) - getattr(off, column)
                cells.append(f"{delta:+d}" if isinstance(delta, int) else
                             "-" if math.isnan(delta) else f"{delta:+.3f}")
            print(f"| {checkpoint} | {split} | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - started:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "scores": [
                {"checkpoint": c, "split": s, "memory": m, **asdict(v)}
                for (c, s, m), v in results.items()]}, handle, indent=1)


if __name__ == "__main__":
    main()
