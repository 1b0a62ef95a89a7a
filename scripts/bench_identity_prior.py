"""The tracker's identities fed back into the memory (issue 14, section 4): an experiment.

    .venv/bin/python scripts/bench_identity_prior.py \
        --checkpoint runs/tiny_memory_mixed/final/model --splits degraded --videos 40 --threads 2

The memory ring holds the last T frames, so an object hidden longer than that leaves no
trace in it. Here, after every frame, each confirmed track that was not detected in it
("lost") has its last query embedding written back into the memory's oldest slot, at the
decoder query slot it was last detected in (`TrackSnapshot.query_index`): the next frames
read it as if the object had been seen there T frames ago. Nothing else changes (same
weights, post-processing and tracker); the oldest slot is pinned only once it holds a real
frame. Compared with the plain memory on the held-out splits of bench_memory_ab.py: video
AP, J&F, IDF1 and ID switches, the last being what the prior is for (objects that leave
and come back, occluders: DEGRADED_PRESET's scene events).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch

from metaseg_ros.eval.evaluate import ground_truth_frames
from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.eval.memory_ab import (
    SCORE_HEADER,
    Run,
    add_split_arguments,
    score_cells,
    split_from_arguments,
    split_scores,
)
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.model.checkpoint import load_checkpoint
from metaseg_ros.tracking import Tracker, TrackerConfig
from metaseg_ros.tracking.track import TrackState


class PinningSegmenter(StreamingSegmenter):
    """A StreamingSegmenter whose memory's oldest slot can take chosen query embeddings."""

    def pin(self, embeddings: dict[int, np.ndarray]) -> int:
        """Write each {query slot: embedding} into the oldest slot; returns how many were
        written (none while that slot is still empty)."""
        memory = self.memory
        if not embeddings or float(memory.valid[0, -1]) == 0.0:
            return 0
        queries = memory.queries.clone()
        for slot, embedding in embeddings.items():
            queries[0, -1, slot] = torch.as_tensor(embedding, dtype=queries.dtype)
        self._memory = memory._replace(queries=queries)
        return len(embeddings)


def track_video(segmenter: PinningSegmenter, frames: Sequence[np.ndarray], prior: bool
                ) -> tuple[list[FrameObjects], int]:
    """One video through segmenter + a fresh tracker; with `prior`, lost confirmed tracks
    are pinned into the memory after every frame. Returns the frames and the pins made."""
    segmenter.reset()
    tracker = Tracker(TrackerConfig(), segmenter.class_names)
    last_seen: dict[int, tuple[int, np.ndarray]] = {}  # track id -> (query slot, embedding)
    frames_out, pins = [], 0
    for frame in frames:
        detections = segmenter.step(frame)
        tracked = tracker.update(detections)
        by_slot = {d.query_index: d.embedding for d in detections.detections}
        live = tracker.tracks
        for track in live:
            if track.track_id and track.detected_this_frame and track.query_index in by_slot:
                last_seen[track.track_id] = (track.query_index, by_slot[track.query_index])
        alive = {track.track_id for track in live}
        last_seen = {k: v for k, v in last_seen.items() if k in alive}
        if prior:
            lost = {last_seen[t.track_id][0]: last_seen[t.track_id][1] for t in live
                    if t.state == TrackState.LOST and t.track_id in last_seen}
            pins += segmenter.pin(lost)
        frames_out.append(FrameObjects.from_tracked(tracked))
    return frames_out, pins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    add_split_arguments(parser, ["degraded"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write every score here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_checkpoint(args.checkpoint).eval()
    segmenter = PinningSegmenter(EagerRunner(model))
    started = time.perf_counter()
    rows = []
    for split in args.splits:
        source = split_from_arguments(args, split, model.config.image_size, model.class_names)
        runs = {"memory": Run(), "memory + identity prior": Run()}
        pins = 0
        for index in range(min(args.videos, len(source))):
            clip = source.load_clip(index, range(source.num_frames(index)))
            gt = ground_truth_frames(clip)
            size = (int(clip.frames.shape[1]), int(clip.frames.shape[2]))
            for name, run in runs.items():
                predicted, made = track_video(segmenter, clip.frames, prior=name != "memory")
                pins += made
                run.add(gt, predicted, clip.frame_tags, size)
        for name, run in runs.items():
            rows.append((split, name, split_scores(run, len(model.class_names))))
        print(f"{split}: {pins} pins, {time.perf_counter() - started:.0f} s", flush=True)

    print(f"\n{args.checkpoint}, {args.videos} videos per split, {args.frames} frames\n")
    print(f"| split | variant | {SCORE_HEADER} |")
    print("|---|---|---|---|---|---|---|---|")
    for split, name, scores in rows:
        print(f"| {split} | {name} | " + " | ".join(score_cells(scores)) + " |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "scores": [
                {"split": s, "variant": n, **asdict(v)} for s, n, v in rows]}, handle, indent=1)


if __name__ == "__main__":
    main()
