"""What each degradation of the synthetic data does to a model, memory off and on (issue 14).

    .venv/bin/python scripts/bench_degradations.py \
        --checkpoint metaseg_ros/weights/metaseg_tiny --threads 1

The same held-out videos (seed 0, videos 200000.., disjoint from training 0..399 and from
the held-out split 100000..) are rendered clean, with one degradation kind at a time
(`DEGRADED_PRESET.only(kind)`: image kinds on --rate of the frames after the clean prefix,
scene events in every video), and with the whole DEGRADED_PRESET mix. Each runs through the
online pipeline (StreamingSegmenter + Tracker with defaults) twice: memory off (the model's
memory emptied before every frame) and memory on.

Table 1, per kind: video mask AP, AP50 and J&F restricted to the frames that have that kind
(metaseg_ros.eval.subsets), for the clean videos (memory off) and the degraded ones (memory
off, memory on), on the same frame indices. Table 2: the clean and the mixed split over
whole videos (video AP, AP50, J&F, J&F on the degraded frames, IDF1, ID switches).

With memory off a frame's detections depend on that frame alone, so frames that are the
same in several renderings of a video are segmented once (same detections, less time).
"""

from __future__ import annotations

import argparse
import time

import torch

from metaseg_ros.data.degradations import (
    DEGRADED_PRESET,
    IMAGE_KINDS,
    KINDS,
    DegradationConfig,
    tag_kinds,
)
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.eval import mot_metrics_combined
from metaseg_ros.eval.evaluate import ground_truth_frames
from metaseg_ros.eval.memory_ab import MemorylessSegmenter, Run, subset_scores, track_video
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.checkpoint import load_checkpoint


def main() -> None:
    """Run the benchmark and print the two markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="metaseg_ros/weights/metaseg_tiny")
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--first-video", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--rate", type=float, default=0.4,
                        help="fraction of frames after the clean prefix for each image kind")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_checkpoint(args.checkpoint).eval()
    size = tuple(model.config.image_size)
    num_classes = len(model.class_names)
    variants = {"clean": DegradationConfig()}
    for kind in args.kinds:
        variants[kind] = DEGRADED_PRESET.only(kind, args.rate if kind in IMAGE_KINDS else 1.0)
    variants["mix"] = DEGRADED_PRESET
    sources = {name: SyntheticVideoSource(args.videos, SyntheticConfig(
        image_size=size, num_frames=args.frames, class_names=tuple(model.class_names),
        degradations=degradations), seed=args.seed, first_video=args.first_video)
        for name, degradations in variants.items()}
    segmenter = StreamingSegmenter(EagerRunner(model), PostprocessSettings())
    memoryless = MemorylessSegmenter(segmenter, cache=True)
    modes = {"off": memoryless, "on": segmenter}
    runs = {(name, mode): Run() for name in variants for mode in modes}
    started = time.perf_counter()
    for video in range(args.videos):
        memoryless.cache.clear()  # frames repeat only within one video's renderings
        for name, source in sources.items():
            clip = source.load_video(video)
            gt = ground_truth_frames(clip)
            tags = clip.frame_tags or ("",) * clip.num_frames
            for mode, variant in modes.items():
                runs[name, mode].add(gt, track_video(variant, clip.frames), tags, size)
        print(f"video {video + 1}/{args.videos}: {time.perf_counter() - started:.0f} s",
              flush=True)

    print(f"\n{args.videos} held-out synthetic videos (seed {args.seed}, first "
          f"{args.first_video}), {args.frames} frames of {size[1]}x{size[0]}, checkpoint "
          f"{args.checkpoint}; image kinds on {args.rate:.0%} of the frames after the clean "
          f"prefix, scene events in every video; memory off = reset before every frame\n")
    print("| kind | frames | AP clean | AP off | AP on | AP50 clean | AP50 off | AP50 on "
          "| J&F clean | J&F off | J&F on |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in [*args.kinds, "mix"]:
        tags = runs[kind, "off"].tags
        selections = [[t for t, tag in enumerate(video) if
                       (tag != "" if kind == "mix" else kind in tag_kinds(tag))]
                      for video in tags]
        clean, off, on = (subset_scores(runs[variant, mode], selections, num_classes)
                          for variant, mode in (("clean", "off"), (kind, "off"), (kind, "on")))
        label = "mix (any degraded frame)" if kind == "mix" else kind
        print(f"| {label} | {off.frames} | " + " | ".join(
            f"{getattr(s, f):.3f}" for f in ("ap", "ap50", "j_and_f")
            for s in (clean, off, on)) + " |")

    print("\n| split | memory | video AP | AP50 | J&F | J&F degraded frames | IDF1 | "
          "ID switches |")
    print("|---|---|---|---|---|---|---|---|")
    mix_selection = [[t for t, tag in enumerate(video) if tag]
                     for video in runs["mix", "off"].tags]
    for name in ("clean", "mix"):
        for mode in modes:
            run = runs[name, mode]
            whole = subset_scores(run, [range(args.frames)] * args.videos, num_classes)
            degraded = subset_scores(run, mix_selection, num_classes)
            mot = mot_metrics_combined(list(zip(run.gt, run.pred, strict=True)),
                                       similarity="mask")
            print(f"| {name} | {mode} | {whole.ap:.3f} | {whole.ap50:.3f} | "
                  f"{whole.j_and_f:.3f} | {degraded.j_and_f:.3f} | {mot.idf1:.3f} | "
                  f"{mot.id_switches} |")
    print(f"\n{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
