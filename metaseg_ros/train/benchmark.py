"""Training throughput: seconds per optimizer step and data loading time, per image size.

    python -m metaseg_ros.train.benchmark --sizes 128 256 --steps 5 --batch-size 2 \
        --clip-frames 3 [--device cuda] [--amp bf16]

Prints one table row per size (median over the timed steps, after one warm-up step).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

from metaseg_ros.data.clips import collate_clips
from metaseg_ros.train.config import load_train_config
from metaseg_ros.train.trainer import Trainer


def main(argv: Sequence[str] | None = None) -> int:
    """Time data loading and train steps of the tiny model on synthetic clips."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--clip-frames", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"model {args.model}, batch {args.batch_size} clips x {args.clip_frames} frames, "
          f"device {args.device}, amp {args.amp}, {torch.get_num_threads()} threads")
    print("| size | data s/batch | train s/step | frames/s |")
    print("|---|---|---|---|")
    for size in args.sizes:
        config = load_train_config(None, [
            f"model={args.model}", "init=none", "output_dir=/tmp/metaseg_bench",
            f"device={args.device}", f"optim.amp={args.amp}",
            f"optim.batch_size={args.batch_size}", "data.num_workers=0",
            f"data.clip_frames={args.clip_frames}", f"data.min_clip_frames={args.clip_frames}",
            f"data.synthetic_size=[{size},{size}]", f"data.augment.output_size=[{size},{size}]",
            "data.num_videos=16", "progress_bar=false"])
        trainer = Trainer(config)
        data_times, step_times = [], []
        for step in range(args.steps + 1):
            started = time.perf_counter()
            keys = [trainer.sampler(step).key(p) for p in trainer.sampler(step).positions(step, 0)]
            batch = collate_clips([trainer.dataset[k] for k in keys])
            loaded = time.perf_counter()
            trainer.train_step([batch])
            if args.device == "cuda":
                torch.cuda.synchronize()
            done = time.perf_counter()
            if step > 0:
                data_times.append(loaded - started)
                step_times.append(done - loaded)
        step_time = statistics.median(step_times)
        frames = args.batch_size * args.clip_frames
        print(f"| {size} | {statistics.median(data_times):.3f} | {step_time:.3f} | "
              f"{frames / step_time:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
