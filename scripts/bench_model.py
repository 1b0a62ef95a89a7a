#!/usr/bin/env python3
"""Time MetaSegmenter's eager forward per config and resolution (random weights).

Each measurement runs the single-frame step with the memory fed back from the previous call,
after warm-up calls, and reports the median and minimum over --repeats calls. With
--reference, configs with a ResNet or Swin backbone are also built as transformers'
Mask2Former at the identical configuration; its weights are converted into ours, the two
models' outputs are compared (max relative error of class and mask logits) and both are
timed on the same input.

    python scripts/bench_model.py --configs tiny r50 --sizes 384 512 --threads 2
    python scripts/bench_model.py --configs r50 swin-t --sizes 512 --reference --json out.json

Timings depend on the machine and its load: compare numbers from one run only. The gflops
column (matrix multiplications and convolutions counted by torch.utils.flop_counter, 2 per
multiply-add) does not.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metaseg_ros.model import CONFIG_NAMES, MetaSegmenter, get_config
from metaseg_ros.model.layers import SAMPLING_MODES, set_deformable_sampling


def time_calls(step, repeats: int, warmup: int, synchronize) -> list[float]:
    """Milliseconds of each timed call of step()."""
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| / max |reference|."""
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def bench_one(name: str, size: int, args: argparse.Namespace) -> dict:
    """Measure one config at one square resolution."""
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    config = get_config(name, image_size=(size, size))
    torch.manual_seed(0)
    reference = None
    if args.reference and config.backbone.kind in ("resnet", "swin"):
        import transformers

        from metaseg_ros.model.convert.hf import random_reference_pair

        transformers.logging.set_verbosity_error()
        reference, model = random_reference_pair(config)
        reference.to(device)
    else:
        model = MetaSegmenter(config).eval()
    model.to(device)
    images = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    images = (images * 255).to(device)
    set_deformable_sampling(model, args.sampling)
    with FlopCounterMode(display=False) as counter:  # needs autograd enabled
        model(images, model.initial_memory(args.batch))
    state = {"memory": model.initial_memory(args.batch)}

    def step() -> None:
        with torch.inference_mode():
            state["memory"] = model(images, state["memory"]).memory

    times = time_calls(step, args.repeats, args.warmup, sync)
    row = {"config": name, "size": size, "batch": args.batch, "device": args.device,
           "threads": torch.get_num_threads(),
           "sampling": args.sampling,
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
           "gflops": round(counter.get_total_flops() / 1e9, 1),
           "median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1)}
    if reference is not None:
        pixels = (images - model.pixel_mean) / model.pixel_std
        with torch.inference_mode():
            ours = model(images, model.initial_memory(args.batch))
            theirs = reference(pixel_values=pixels)
        class_error = relative_error(ours.class_logits, theirs.class_queries_logits)
        mask_error = relative_error(ours.mask_logits, theirs.masks_queries_logits)
        row["class_rel_err"] = f"{class_error:.1e}"
        row["mask_rel_err"] = f"{mask_error:.1e}"

        def reference_step() -> None:
            with torch.inference_mode():
                reference(pixel_values=pixels)

        ref_times = time_calls(reference_step, args.repeats, args.warmup, sync)
        row["hf_median_ms"] = round(statistics.median(ref_times), 1)
        row["hf_min_ms"] = round(min(ref_times), 1)
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark grid and print a table (and optionally JSON)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "r50"], choices=CONFIG_NAMES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[384, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sampling", choices=SAMPLING_MODES, default="gather",
                        help="deformable-attention sampling implementation (same numbers)")
    parser.add_argument("--reference", action="store_true",
                        help="also build, check and time transformers' Mask2Former")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    rows = []
    for name in args.configs:
        for size in args.sizes:
            row = bench_one(name, size, args)
            rows.append(row)
            print("  ".join(f"{key}={value}" for key, value in row.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
