#!/usr/bin/env python3
"""Where the memory's gates open: content gates, keep factors, the mask-feature carry
(memory.content_gate, keep_gate, past_mask_features; issue 14).

    .venv/bin/python scripts/content_gates.py --checkpoint runs/tiny_memory_content/final/model

The same validation videos (seed 0, videos 300000.., disjoint from training and from the
held-out A/B splits) are rendered clean and with one degradation kind at a time
(`DEGRADED_PRESET.only(kind)`, as scripts/bench_degradations.py does), and run through the
network with the memory carried from frame to frame (no tracker: the gates are the
network's). A forward hook on each content gate records tanh(gate + MLP([token, read])):
per pixel of the pixel read (stride 8) and per query of each decoder layer.

Per kind, over the frames of that kind (frame 0 excluded: its memory is empty): the pixel
read's mean gate on the cells the degradation changed (mean absolute difference from the
clean rendering above --changed), on the cells it left as they were, and the decoder
layers' mean gate over all queries. A gate that follows the content opens more where a
frame lost what the past still has (lost rows, dark frames) than on clean frames.

With keep gates (memory.keep_gate), the factor on each pixel's own features
(1 + tanh(MLP([pixel, read]))) on the changed and the other cells as well: a read that
replaces damaged features keeps less (a factor below 1) where the frame lost its content.

With the mask-feature carry (memory.past_mask_features), its weight tanh(gate) per pixel of
the stride-4 mask features on the changed and the other cells: how much of the last frame's
mask features each pixel takes.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from metaseg_ros.data.degradations import (
    DEGRADED_PRESET,
    IMAGE_KINDS,
    KINDS,
    DegradationConfig,
    tag_kinds,
)
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.model.checkpoint import load_checkpoint
from metaseg_ros.model.metasegmenter import MetaSegmenter


class GateRecorder:
    """Forward hooks that keep the last frame's gates: the pixel read's content gate and keep
    factor (stride 8), the carry's weight (stride 4), each decoder layer's query gates."""

    def __init__(self, model: MetaSegmenter) -> None:
        memory = model.config.memory
        self.content = memory.content_gate and model.pixel_memory is not None
        self.carries = model.mask_memory is not None
        if not self.content and not self.carries:
            raise ValueError("the checkpoint has neither content gates with a pixel read "
                             "(memory.content_gate, memory.pixel_read) nor the mask-feature "
                             "carry (memory.past_mask_features)")
        self.pixel: torch.Tensor | None = None
        self.keep: torch.Tensor | None = None
        self.carry: torch.Tensor | None = None
        self.queries: list[torch.Tensor] = []
        if self.carries:
            model.mask_memory.gate[-1].register_forward_hook(
                lambda _m, _i, out: setattr(self, "carry", torch.tanh(out[0, 0])))
        if not self.content:
            return
        read = model.pixel_memory.attention
        read.content_gate.register_forward_hook(
            lambda _m, _i, out: setattr(self, "pixel", torch.tanh(read.gate + out[0, :, 0])))
        if read.keep_gate is not None:
            read.keep_gate.register_forward_hook(
                lambda _m, _i, out: setattr(self, "keep", 1.0 + torch.tanh(out[0, :, 0])))
        for layer in model.transformer_decoder.layers:
            attention = layer.memory_attn
            attention.content_gate.register_forward_hook(
                lambda _m, _i, out, a=attention: self.queries.append(
                    torch.tanh(a.gate + out[0, :, 0])))


def changed_cells(frame: np.ndarray, clean: np.ndarray, grid: tuple[int, int],
                  threshold: float) -> np.ndarray:
    """(gh, gw) bool: cells whose mean absolute difference from the clean frame exceeds
    threshold (grey levels)."""
    diff = np.abs(frame.astype(np.float32) - clean.astype(np.float32)).mean(axis=2)
    gh, gw = grid
    height, width = diff.shape
    cells = diff.reshape(gh, height // gh, gw, width // gw).mean(axis=(1, 3))
    return cells > threshold


def main() -> None:
    """Print one markdown table: per kind, the mean gate on changed and unchanged cells."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--first-video", type=int, default=300_000)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--rate", type=float, default=0.4)
    parser.add_argument("--changed", type=float, default=8.0,
                        help="grey-level difference from the clean frame that marks a cell")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_checkpoint(args.checkpoint).eval()
    try:
        recorder = GateRecorder(model)
    except ValueError as error:
        parser.error(str(error))
    size = tuple(model.config.image_size)
    kinds = ["clean", *KINDS]
    try:
        sources = {kind: SyntheticVideoSource(args.videos, SyntheticConfig(
            image_size=size, num_frames=args.frames, class_names=tuple(model.class_names),
            degradations=DegradationConfig() if kind == "clean"
            else DEGRADED_PRESET.only(kind, args.rate if kind in IMAGE_KINDS else 1.0)),
            seed=0, first_video=args.first_video) for kind in kinds}
    except ValueError as error:  # rates the degradation generator cannot place
        parser.error(str(error))
    sums = {kind: {"changed": [], "kept": [], "queries": [], "keep_changed": [],
                   "keep_kept": [], "carry_changed": [], "carry_kept": []} for kind in kinds}
    for video in range(args.videos):
        clean = sources["clean"].load_video(video)
        for kind in kinds:
            clip = clean if kind == "clean" else sources[kind].load_video(video)
            tags = clip.frame_tags or ("",) * clip.num_frames
            memory = model.initial_memory(1)
            for t, frame in enumerate(clip.frames):
                recorder.queries.clear()
                image = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
                with torch.no_grad():
                    memory = model(image, memory).memory
                if t == 0 or (kind != "clean" and kind not in tag_kinds(tags[t])):
                    continue
                recorded = {}  # column prefix -> the frame's values on their grid
                if recorder.content:
                    grid = (size[0] // 8, size[1] // 8)
                    recorded[""] = recorder.pixel.reshape(grid).numpy()
                    sums[kind]["queries"].extend(torch.cat(recorder.queries).tolist())
                    if recorder.keep is not None:
                        recorded["keep_"] = recorder.keep.reshape(grid).numpy()
                if recorder.carries:
                    recorded["carry_"] = recorder.carry.numpy()  # stride 4
                for name, values in recorded.items():
                    changed = (changed_cells(frame, clean.frames[t], values.shape,
                                             args.changed)
                               if kind != "clean" else np.zeros(values.shape, bool))
                    sums[kind][f"{name}changed"].extend(values[changed].tolist())
                    sums[kind][f"{name}kept"].extend(values[~changed].tolist())
        print(f"video {video + 1}/{args.videos}", flush=True)

    print(f"\n{args.videos} validation videos (first {args.first_video}), checkpoint "
          f"{args.checkpoint}; cells changed: mean |frame - clean| > {args.changed}\n")
    columns = []
    if recorder.content:
        columns += [("pixel gate, changed cells", "changed"), ("pixel gate, other cells", "kept"),
                    ("query gate (decoder layers)", "queries")]
        if recorder.keep is not None:
            columns += [("keep factor, changed cells", "keep_changed"),
                        ("keep factor, other cells", "keep_kept")]
    if recorder.carries:
        columns += [("carry weight, changed cells", "carry_changed"),
                    ("carry weight, other cells", "carry_kept")]
    cell_lists = ("changed", "kept") if recorder.content else ("carry_changed", "carry_kept")
    print("| kind | frames' cells changed | " + " | ".join(c for c, _ in columns) + " |")
    print("|---|---|" + "---|" * len(columns))

    def mean(values: list[float]) -> str:
        return f"{np.mean(values):+.3f}" if values else "-"

    for kind in kinds:
        cells = sums[kind]
        changed, other = (len(cells[name]) for name in cell_lists)
        share = f"{changed / (changed + other):.0%}" if changed + other else "-"
        print(f"| {kind} | {share} | " + " | ".join(mean(cells[k]) for _, k in columns) + " |")


if __name__ == "__main__":
    main()
