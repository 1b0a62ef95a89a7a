"""What `precision: int8` costs in accuracy (issue 15, part 3): the shipped weights through
ONNX Runtime in float32 and in int8 (inference/quantize.py) on the held-out synthetic splits,
same tracker, same post-processing defaults.

    .venv/bin/python scripts/bench_int8.py --videos 40 --threads 2 --json runs/int8_accuracy.json

Splits as in scripts/bench_memory_ab.py: clean (videos 100000.., the model card's held-out
split) and degraded (200000.., DEGRADED_PRESET); generator seed 0, 24 frames. Printed per
split and precision: video mask AP, AP50, J&F, IDF1, ID switches, and the median network time
of the two sessions on the same frames, taking turns video by video (their ratio is the speed-up on
this machine; scripts/bench_inference.py measures r50 and the whole step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from metaseg_ros.data.degradations import DEGRADED_PRESET, DegradationConfig
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.eval.memory_ab import run_videos, split_scores
from metaseg_ros.inference.builder import create_runner, shipped_checkpoint
from metaseg_ros.inference.runner import RunnerOptions
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.checkpoint import load_checkpoint

PRECISIONS = ("float32", "int8")
COLUMNS = ("video_ap", "ap50", "j_and_f", "idf1", "id_switches")


class TimedRunner:
    """A runner that records the wall time of each call (the network alone)."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.config = runner.config
        self.device = runner.device
        self.times_ms: list[float] = []

    def initial_memory(self):
        """The wrapped runner's empty memory."""
        return self.runner.initial_memory()

    def __call__(self, images, memory):
        """One timed step."""
        start = time.perf_counter()
        output = self.runner(images, memory)
        self.times_ms.append((time.perf_counter() - start) * 1e3)
        return output


def main() -> None:
    """Score both precisions on each split; print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="", help="default: the shipped tiny weights")
    parser.add_argument("--splits", nargs="+", default=["clean", "degraded"],
                        choices=["clean", "degraded"])
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every score here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or str(shipped_checkpoint("tiny"))
    model = load_checkpoint(checkpoint).eval()
    first = {"clean": 100_000, "degraded": 200_000}
    degradations = {"clean": DegradationConfig(), "degraded": DEGRADED_PRESET}
    rows = []
    with tempfile.TemporaryDirectory(prefix="metaseg_int8_") as cache:
        runners = {p: TimedRunner(create_runner(
            model, "onnxruntime", "cpu", cache_key="bench-int8", log=print,
            options=RunnerOptions(num_threads=args.threads, cache_dir=Path(cache),
                                  precision=p))) for p in PRECISIONS}
        segmenters = {p: StreamingSegmenter(r, PostprocessSettings()) for p, r in runners.items()}
        for split in args.splits:
            source = SyntheticVideoSource(args.videos, SyntheticConfig(
                image_size=tuple(model.config.image_size), num_frames=args.frames,
                class_names=tuple(model.class_names), degradations=degradations[split]),
                seed=0, first_video=first[split])
            for runner in runners.values():
                runner.times_ms.clear()
            runs = run_videos(segmenters, source, args.videos)
            for precision, run in runs.items():
                scores = split_scores(run, len(model.class_names))
                rows.append({"split": split, "precision": precision, **asdict(scores),
                             "network_ms": statistics.median(runners[precision].times_ms)})
    print(f"\n{checkpoint}, {args.videos} videos per split, {args.frames} frames, "
          f"{args.threads} threads\n")
    print("| split | precision | video AP | AP50 | J&F | IDF1 | ID switches | network ms |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [str(row[c]) if isinstance(row[c], int) else f"{row[c]:.3f}" for c in COLUMNS]
        print(f"| {row['split']} | {row['precision']} | {' | '.join(cells)} | "
              f"{row['network_ms']:.1f} |")
    for split in args.splits:
        pair = {r["precision"]: r for r in rows if r["split"] == split}
        print(f"{split}: int8 minus float32 video AP "
              f"{pair['int8']['video_ap'] - pair['float32']['video_ap']:+.3f}, J&F "
              f"{pair['int8']['j_and_f'] - pair['float32']['j_and_f']:+.3f}; network "
              f"x{pair['float32']['network_ms'] / pair['int8']['network_ms']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
