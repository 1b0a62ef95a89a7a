#!/usr/bin/env python3
"""Where ONNX Runtime spends a step: the share of each operator type, from its own profiler.

    .venv/bin/python scripts/profile_onnxruntime.py --config r50 --size 384 \\
        --sampling gather grid_sample --threads 2

For each deformable-attention sampling the step is exported (random weights, seed 0; the
export is the one the onnxruntime backend uses), run `--runs` times with the memory fed back
on a random image (the first two are warm-up), timed (median) and profiled; prints the
median and the operator types taking the most kernel time. The exports are written to a
temporary folder.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="r50")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--sampling", nargs="+", default=["gather", "grid_sample"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch

    from metaseg_ros.inference.artifacts import ExportSettings
    from metaseg_ros.inference.export import write_onnx_artifact
    from metaseg_ros.model import MetaSegmenter, get_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MetaSegmenter(get_config(args.config, image_size=(args.size, args.size))).eval()
    with tempfile.TemporaryDirectory() as folder:
        for sampling in args.sampling:
            path = Path(folder) / f"{args.config}_{sampling}.onnx"
            write_onnx_artifact(model, path, ExportSettings("onnx", sampling=sampling))
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(folder) / f"profile_{sampling}")
            session = ort.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            feeds = {i.name: np.zeros(i.shape, dtype=np.float32) for i in session.get_inputs()}
            feeds[names[0]] = (np.random.default_rng(0).random(feeds[names[0]].shape)
                               * 255).astype(np.float32)
            memory_outputs = [o.name for o in session.get_outputs()][-len(names) + 1:]
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                outputs = session.run(None, feeds)
                times.append(time.perf_counter() - start)
                for name, value in zip(names[1:], outputs[-len(memory_outputs):], strict=True):
                    feeds[name] = value  # the memory fed back
            by_type: collections.Counter[str] = collections.Counter()
            for event in json.loads(Path(session.end_profiling()).read_text()):
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    by_type[event["args"]["op_name"]] += event["dur"]
            total = sum(by_type.values())
            print(f"{args.config} {args.size}x{args.size} sampling {sampling}: step median "
                  f"{statistics.median(times[2:]) * 1e3:.1f} ms (profiled)")
            for op, duration in by_type.most_common(args.top):
                print(f"  {op:28s} {duration / total:6.1%}")


if __name__ == "__main__":
    main()
