#!/usr/bin/env python3
"""Where a frame's time goes outside the network: per-stage medians of the node's path.

    .venv/bin/python scripts/bench_stages.py --backend onnxruntime --frames 40

The shipped `tiny` model (256x256 network input), score threshold 0.5, on synthetic videos
(real cut-outs over real backgrounds: the model finds its objects) rendered at each camera
size (default 640x480 and 1280x720). Per frame, timed one after the other as the node runs
them: letterbox, network (the runner, memory fed back), post-processing (instance
selection), tracking, and building the published InstanceMaskArray. Prints the medians and
the share of the step that is not the network. Post-processing is timed twice on the same
outputs, frame by frame in one run: the CPU path (masks inside their boxes, the default) and
the whole-frame path it replaced on the CPU (still the GPU's): before and after side by side.
With --no-whole-frames that second path is not run (it allocates tens of megabytes per
frame at 720p, which evicts the caches the stages after it would find warm in the node).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--sizes", nargs="+", default=["480x640", "720x1280"],
                        help="camera frames HxW")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--no-whole-frames", action="store_true",
                        help="do not time the whole-frame post-processing path as well")
    args = parser.parse_args()

    import torch
    from std_msgs.msg import Header

    from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
    from metaseg_ros.inference.builder import create_runner, shipped_checkpoint
    from metaseg_ros.inference.postprocess import _select_full_frames, select_instances
    from metaseg_ros.inference.preprocess import letterbox_image
    from metaseg_ros.inference.runner import RunnerOptions
    from metaseg_ros.inference.settings import PostprocessSettings
    from metaseg_ros.message_content import instance_array_msg
    from metaseg_ros.model.checkpoint import load_checkpoint
    from metaseg_ros.results import TrackedFrame
    from metaseg_ros.ros.messages import RCLPY_TYPES
    from metaseg_ros.tracking import Tracker, TrackerConfig

    torch.set_num_threads(args.threads)
    model = load_checkpoint(shipped_checkpoint("tiny"))
    runner = create_runner(model, args.backend, "cpu", cache_key="metaseg_tiny",
                           log=lambda _: None, options=RunnerOptions(num_threads=args.threads))
    settings = PostprocessSettings(score_threshold=args.score_threshold)

    print(f"tiny {model.config.image_size[0]}x{model.config.image_size[1]}, {args.backend}, "
          f"{args.threads} threads, threshold {args.score_threshold}, {args.frames} frames")
    print("| camera | letterbox | network | post-processing: boxes (whole frames) | tracking | "
          "message | step | not network: boxes (whole frames) | instances |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        height, width = map(int, size.split("x"))
        count = args.frames + args.warmup
        generator = SyntheticVideoGenerator(SyntheticConfig(image_size=(height, width),
                                                            num_frames=count), seed=7)
        frames = generator.clip(3, range(count)).frames
        tracker = Tracker(TrackerConfig(), class_names=model.config.class_names)
        memory = runner.initial_memory()
        stages: dict[str, list[float]] = {k: [] for k in
                                          ("letterbox", "network", "post", "track", "message")}
        whole_frames: list[float] = []
        instances = []
        for index, rgb in enumerate(frames):
            t0 = time.perf_counter()
            images, letterbox = letterbox_image(rgb, model.config.image_size,
                                                model.config.pixel_mean)
            t1 = time.perf_counter()
            output = runner(images, memory)
            memory = output.memory
            t2 = time.perf_counter()
            detections = select_instances(output.class_logits[0], output.mask_logits[0],
                                          output.query_embeddings[0], letterbox, settings)
            t3 = time.perf_counter()
            if not args.no_whole_frames:
                _select_full_frames(output.class_logits[0], output.mask_logits[0],
                                    output.query_embeddings[0], letterbox, settings)
            whole_frames.append((time.perf_counter() - t3) * 1e3)
            t3b = time.perf_counter()
            tracked = tracker.update(detections)
            t4 = time.perf_counter()
            instance_array_msg(TrackedFrame(height, width, tracked), Header(), RCLPY_TYPES)
            t5 = time.perf_counter()
            if index < args.warmup:
                whole_frames.pop()
            else:
                for name, (a, b) in zip(stages, ((t0, t1), (t1, t2), (t2, t3), (t3b, t4),
                                                 (t4, t5)), strict=True):
                    stages[name].append((b - a) * 1e3)
                instances.append(len(tracked))
        medians = {name: statistics.median(times) for name, times in stages.items()}
        steps = [sum(parts) for parts in zip(*stages.values(), strict=True)]
        not_network = [step - net for step, net in zip(steps, stages["network"], strict=True)]
        share = statistics.median(n / s for n, s in zip(not_network, steps, strict=True))
        old_not = [n - p + w for n, p, w in zip(not_network, stages["post"], whole_frames,
                                                 strict=True)]
        old_share = statistics.median(n / (n + net) for n, net in zip(old_not, stages["network"],
                                                                        strict=True))
        whole = "-" if args.no_whole_frames else f"{statistics.median(whole_frames):.2f}"
        old = "-" if args.no_whole_frames else \
            f"{statistics.median(old_not):.2f} ms {old_share:.1%}"
        print(f"| {width}x{height} | {medians['letterbox']:.2f} | {medians['network']:.1f} | "
              f"{medians['post']:.2f} ({whole}) | "
              f"{medians['track']:.2f} | {medians['message']:.2f} | "
              f"{statistics.median(steps):.1f} | {statistics.median(not_network):.2f} ms "
              f"{share:.1%} ({old}) | "
              f"{np.mean(instances):.1f} |")


if __name__ == "__main__":
    main()
