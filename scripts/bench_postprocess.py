#!/usr/bin/env python3
"""Post-processing cost on the CPU, the box path against the whole-frame path, in one run.

    .venv/bin/python scripts/bench_postprocess.py [--frames 8] [--repeats 3]

The shipped `tiny` model's real outputs (eager, memory fed back) on synthetic videos
rendered at 640x480 and 1280x720, the node's default settings (threshold 0.5). Reports
per-frame medians of *CPU time of the calling thread* (time.thread_time, torch on one
thread): on a shared, loaded machine wall time mostly measures the other processes, CPU
time much less so. Both paths run on the same outputs, alternately.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
    from metaseg_ros.inference.builder import shipped_checkpoint
    from metaseg_ros.inference.postprocess import _select_full_frames, _select_in_boxes
    from metaseg_ros.inference.preprocess import letterbox_image
    from metaseg_ros.inference.settings import PostprocessSettings
    from metaseg_ros.model.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    model = load_checkpoint(shipped_checkpoint("tiny"))
    settings = PostprocessSettings()
    print("| camera | network, eager (ms CPU) | letterbox | post-processing: boxes | "
          "whole frames | ratio | instances |")
    print("|---|---|---|---|---|---|---|")
    for height, width in ((480, 640), (720, 1280)):
        config = SyntheticConfig(image_size=(height, width), num_frames=args.frames)
        frames = SyntheticVideoGenerator(config, seed=7).clip(3, range(args.frames)).frames
        memory, outputs, network, letterboxing = model.initial_memory(1), [], [], []
        with torch.no_grad():
            for rgb in frames:
                start = time.thread_time()
                images, letterbox = letterbox_image(rgb, model.config.image_size,
                                                    model.config.pixel_mean)
                letterboxing.append(time.thread_time() - start)
                start = time.thread_time()
                output = model(images, memory)
                network.append(time.thread_time() - start)
                memory = output.memory
                outputs.append((output, letterbox))
        times: dict[str, list[float]] = {"boxes": [], "whole": []}
        counts = []
        for _ in range(args.repeats):
            for output, letterbox in outputs:
                for name, select in (("boxes", _select_in_boxes),
                                     ("whole", _select_full_frames)):
                    start = time.thread_time()
                    result = select(output.class_logits[0], output.mask_logits[0],
                                    output.query_embeddings[0], letterbox, settings)
                    times[name].append(time.thread_time() - start)
                counts.append(len(result.detections))
        boxes, whole = (statistics.median(times[k]) * 1e3 for k in ("boxes", "whole"))
        print(f"| {width}x{height} | {statistics.median(network) * 1e3:.1f} | "
              f"{statistics.median(letterboxing) * 1e3:.2f} | {boxes:.2f} | {whole:.2f} | "
              f"{whole / boxes:.1f}x | {statistics.mean(counts):.1f} |")


if __name__ == "__main__":
    main()
