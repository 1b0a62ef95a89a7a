#!/usr/bin/env python3
"""Which frames the memory keeps (issue 14): an experiment with confidence-gated writes.

    .venv/bin/python scripts/bench_memory_writes.py \
        --checkpoint runs/tiny_memory_decoder/final/model --ratios 0.8 0.9 --videos 40 --threads 2

The ring holds the last T frames whatever they were, so a burst of degraded frames fills it
with degraded features exactly when the past should help. Here a frame is written into the
memory only when the network is about as confident on it as on the frames written before:
confidence = the mean of the `--top` largest per-query class probabilities (no-object
excluded); a frame whose confidence is below `ratio` x the running mean (exponential,
weight `--smoothing`) of the written frames' is segmented with the memory but not written
into it (the ring keeps the older frames), at most `--max-skips` frames in a row (then the
frame is written whatever its confidence, and the running mean restarts from it, so that a
new scene cannot freeze the memory). Same weights, post-processing and tracker; compared
with writing every frame on the held-out splits of bench_memory_ab.py. Also printed: how
many frames were skipped and how many of those were degraded (the frames' tags), which
says whether the confidence finds the degraded frames at all.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import torch

from metaseg_ros.eval.memory_ab import (
    SCORE_HEADER,
    add_split_arguments,
    run_videos,
    score_cells,
    split_from_arguments,
    split_scores,
)
from metaseg_ros.inference.preprocess import Letterbox
from metaseg_ros.inference.runner import NetworkOutput
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.model.checkpoint import load_checkpoint
from metaseg_ros.results import FrameDetections


class GatedWriteSegmenter(StreamingSegmenter):
    """A StreamingSegmenter that keeps its old memory after a low-confidence frame."""

    def __init__(self, runner: EagerRunner, ratio: float, top: int, smoothing: float,
                 max_skips: int) -> None:
        super().__init__(runner)
        self.ratio, self.top, self.smoothing, self.max_skips = ratio, top, smoothing, max_skips
        self.written: list[list[bool]] = []  # per video, per frame
        self._mean: float | None = None
        self._skips = 0

    def reset(self) -> None:
        super().reset()
        self.written.append([])
        self._mean, self._skips = None, 0

    def finish(self, output: NetworkOutput, letterbox: Letterbox) -> FrameDetections:
        previous = self.memory
        detections = super().finish(output, letterbox)
        probabilities = output.class_logits[0].float().softmax(dim=-1)[:, :-1]
        confidence = float(probabilities.max(dim=-1).values.topk(self.top).values.mean())
        write = (self._mean is None or confidence >= self.ratio * self._mean
                 or self._skips >= self.max_skips)
        if write:
            restart = self._mean is None or self._skips >= self.max_skips
            self._mean = confidence if restart else (
                self.smoothing * confidence + (1 - self.smoothing) * self._mean)
            self._skips = 0
        else:
            self._memory = previous  # segmented with the memory, not written into it
            self._skips += 1
        self.written[-1].append(write)
        return detections


def main() -> None:
    """Every-frame writes against confidence-gated writes on each split; markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.9])
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--smoothing", type=float, default=0.3)
    parser.add_argument("--max-skips", type=int, default=4)
    add_split_arguments(parser, ["degraded", "clean"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write every score here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_checkpoint(args.checkpoint).eval()
    runner = EagerRunner(model)
    rows, started = [], time.perf_counter()
    print(f"| split | writes | {SCORE_HEADER} | frames skipped | of them degraded "
          "| degraded frames |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for split in args.splits:
        source = split_from_arguments(args, split, model.config.image_size, model.class_names)
        modes = {"every frame": StreamingSegmenter(runner)}
        for ratio in args.ratios:
            modes[f"gated {ratio:g}"] = GatedWriteSegmenter(runner, ratio, args.top,
                                                            args.smoothing, args.max_skips)
        runs = run_videos(modes, source, args.videos)
        for name, run in runs.items():
            scores = split_scores(run, len(model.class_names))
            written = getattr(modes[name], "written", None)
            tags = [tag for video in run.tags for tag in video]
            skipped = [not w for video in written for w in video] if written else \
                [False] * len(tags)
            skipped_degraded = sum(s and bool(t) for s, t in zip(skipped, tags, strict=True))
            cells = [*score_cells(scores), str(sum(skipped)), str(skipped_degraded),
                     str(sum(bool(t) for t in tags))]
            print(f"| {split} | {name} | " + " | ".join(cells) + " |", flush=True)
            rows.append({"split": split, "writes": name, **asdict(scores),
                         "skipped": int(sum(skipped)), "skipped_degraded": skipped_degraded})
    print(f"\n{args.videos} videos per split, {args.frames} frames, {args.checkpoint}; "
          f"top {args.top}, smoothing {args.smoothing}, at most {args.max_skips} skips in a "
          f"row; {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
