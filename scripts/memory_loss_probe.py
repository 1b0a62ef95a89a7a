"""The training loss on validation clips, memory on vs memory emptied before every frame
(issue 14): a quick probe of whether a checkpoint uses its memory, used to choose the memory
training settings.

    .venv/bin/python scripts/memory_loss_probe.py runs/pilot/p6/checkpoints/step_00000080/model \
        metaseg_ros/weights/metaseg_tiny

Clips of --frames consecutive frames (stride 1, no augmentation) from the validation videos
(seed 0, first 300000, DEGRADED_PRESET: disjoint from training 0..399 and from the held-out
splits 100000.. and 200000..). Each frame's loss (class + mask terms of the final layer,
Mask2Former weights, no association term, --points points per mask) is averaged over the
"degraded" frames (an image degradation, the occluder or the re-entry in its tag) and the
other frames ("clean": no tag, or only the object blurred since its first frames).
"""

from __future__ import annotations

import argparse

import torch

from metaseg_ros.data.clips import ClipDataset, ClipSamplingConfig, ClipTargets, collate_clips
from metaseg_ros.data.degradations import DEGRADED_PRESET
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.model.checkpoint import load_checkpoint
from metaseg_ros.train.losses import FramePrediction, LossConfig, VideoSetCriterion


def main() -> None:
    """Print one line per checkpoint: mean frame loss, memory on and off, by frame kind."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--first-video", type=int, default=300_000)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--points", type=int, default=3136)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for checkpoint in args.checkpoints:
        model = load_checkpoint(checkpoint).eval()
        source = SyntheticVideoSource(args.videos, SyntheticConfig(
            image_size=tuple(model.config.image_size), num_frames=24,
            class_names=tuple(model.class_names), degradations=DEGRADED_PRESET),
            seed=0, first_video=args.first_video)
        clips = ClipDataset(source, ClipSamplingConfig(args.frames, 1), None, seed=5)
        criterion = VideoSetCriterion(len(model.class_names), LossConfig(
            num_points=args.points, contrastive_weight=0.0, deep_supervision=False))
        sums = {(mode, kind): [0.0, 0] for mode in ("on", "off") for kind in ("degraded",
                                                                             "clean")}
        with torch.no_grad():
            for index in range(args.videos):
                clip = clips[(index, 0)]
                batch = collate_clips([clip])
                truth = batch.targets[0]
                for mode in ("on", "off"):
                    memory = model.initial_memory(1)
                    for t in range(batch.images.shape[1]):
                        if mode == "off":
                            memory = model.initial_memory(1)
                        out = model(batch.images[:, t], memory)
                        memory = out.memory
                        terms = criterion(
                            [FramePrediction(out.class_logits, out.mask_logits,
                                             out.query_embeddings)],
                            [ClipTargets(truth.masks[t:t + 1], truth.labels,
                                         truth.instance_ids)],
                            [torch.Generator().manual_seed(index * 10 + t)])
                        tag = clip.frame_tags[t] if clip.frame_tags else ""
                        kind = "degraded" if tag and tag != "object_blur" else "clean"
                        sums[mode, kind][0] += float(terms.total)
                        sums[mode, kind][1] += 1
        cells = " ".join(f"{mode}/{kind}={total / max(count, 1):.3f} (n={count})"
                         for (mode, kind), (total, count) in sums.items())
        print(f"{checkpoint}: {cells}", flush=True)


if __name__ == "__main__":
    main()
