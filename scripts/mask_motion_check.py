"""How well the last frame's mask features, as kept or moved on by the flow
(memory.past_mask_motion), stand in for the current frame's (issue 14).

    .venv/bin/python scripts/mask_motion_check.py --checkpoint metaseg_ros/weights/metaseg_tiny

A check of model/mask_motion.py that needs no training: the checkpoint runs with the carry
and its motion on and the carry's gate shut (every frame uses its own mask features, as
the model without the carry), over the clean and the degraded (DEGRADED_PRESET) rendering
of the same validation videos. At every frame after the second, the clean run's confident
queries (class score > --score, 0.5) draw their masks on the clean frame's own mask features (the
reference) and on other features: the last frame's as kept, the last frame's moved on by
the flow, and on degraded frames the damaged frame's own. Printed: the mean mask IoU with
the reference per kind of frame, and the share of cells the moved features cover. A last
column bounds what any rigid move could do: each query's mask on the last frame's features
shifted by its own best whole-cell step (+-SHIFT_ORACLE_RADIUS cells), an oracle.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import defaultdict

import numpy as np
import torch
from safetensors.torch import load_file

from metaseg_ros.data.degradations import DEGRADED_PRESET, DegradationConfig
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.model import MetaSegmenter
from metaseg_ros.model.checkpoint import checkpoint_paths, load_checkpoint_config

SHIFT_ORACLE_RADIUS = 4  # cells of the stride-4 map; objects move at most ~2.2 per frame


def model_with_motion(checkpoint: str) -> MetaSegmenter:
    """The checkpoint's model with the carry and its motion on, the carry's gate shut."""
    config = load_checkpoint_config(checkpoint)
    memory = dataclasses.replace(config.memory, past_mask_features=True, past_mask_motion=True)
    model = MetaSegmenter(dataclasses.replace(config, memory=memory)).eval()
    weights, _ = checkpoint_paths(checkpoint)
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    if unexpected or any(not name.startswith("mask_memory.") for name in missing):
        raise SystemExit(f"error: {checkpoint} does not fit its config")
    with torch.no_grad():
        model.mask_memory.gate[-1].weight.zero_()
        model.mask_memory.gate[-1].bias.zero_()
    return model


class Recorder:
    """The carry's inputs and the last decoder layer's mask embeddings of the last step."""

    def __init__(self, model: MetaSegmenter) -> None:
        self.seen: dict[str, torch.Tensor] = {}
        model.mask_memory.register_forward_hook(self._carry)
        model.transformer_decoder.mask_embed.register_forward_hook(self._embed)

    def _carry(self, _module, inputs, _output) -> None:
        self.seen["current"], self.seen["kept"] = inputs[0], inputs[1]

    def _embed(self, _module, _inputs, output) -> None:
        self.seen["embeddings"] = output  # the last call is the last layer's


def run(model: MetaSegmenter, recorder: Recorder, frames: np.ndarray) -> list[dict]:
    """Per frame: the current and kept features, the embeddings and the class scores."""
    memory, steps = model.initial_memory(1), []
    with torch.no_grad():
        for frame in frames:
            image = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
            output = model(image, memory)
            memory = output.memory
            scores = output.class_logits.softmax(-1)[0, :, :-1].amax(-1)
            steps.append({**recorder.seen, "scores": scores})
    return steps


def mean_iou(embeddings: torch.Tensor, reference: torch.Tensor, features: torch.Tensor,
             shift_radius: int = 0) -> float:
    """Mean over queries of the IoU of the mask (logit > 0) a query draws on features with
    its mask on reference; with shift_radius, each query's best IoU over its mask shifted by
    any whole step within +-shift_radius cells (an oracle)."""
    ours = torch.einsum("qc,chw->qhw", embeddings, features[0]) > 0
    theirs = torch.einsum("qc,chw->qhw", embeddings, reference[0]) > 0
    keep = theirs.flatten(1).any(1)
    if not keep.any():
        return float("nan")
    ours, theirs = ours[keep], theirs[keep]
    best = torch.zeros(len(theirs))
    steps = range(-shift_radius, shift_radius + 1)
    for dy in steps:
        for dx in steps:
            shifted = torch.roll(ours, (dy, dx), dims=(1, 2))
            inter = (shifted & theirs).flatten(1).sum(1).float()
            union = (shifted | theirs).flatten(1).sum(1).float()
            best = torch.maximum(best, inter / union)
    return float(best.mean())


def main() -> None:
    """Run the check and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="metaseg_ros/weights/metaseg_tiny")
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--first-video", type=int, default=300_000,
                        help="validation videos by default (not a held-out split)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--score", type=float, default=0.5,
                        help="the class score above which a query of the clean run counts")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.videos < 1 or args.frames < 3:
        print("error: --videos must be >= 1 and --frames >= 3", file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(args.threads)
    model = model_with_motion(args.checkpoint)
    recorder = Recorder(model)
    sources = {name: SyntheticVideoSource(args.videos, SyntheticConfig(
        image_size=tuple(model.config.image_size), num_frames=args.frames,
        class_names=tuple(model.class_names), degradations=degradations),
        first_video=args.first_video) for name, degradations in
        (("clean", DegradationConfig()), ("degraded", DEGRADED_PRESET))}
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for video in range(args.videos):
        clean_clip = sources["clean"].load_video(video)
        degraded_clip = sources["degraded"].load_video(video)
        clean = run(model, recorder, clean_clip.frames)
        degraded = run(model, recorder, degraded_clip.frames)
        tags = degraded_clip.frame_tags or ("",) * len(degraded)
        for t in range(2, len(clean)):
            reference = clean[t]
            confident = reference["scores"] > args.score
            if not confident.any():
                continue
            embeddings = reference["embeddings"][0, confident]
            kinds = [("clean", clean[t])]
            if tags[t]:
                kinds.append((tags[t].split("+")[0], degraded[t]))
            for kind, step in kinds:
                past, moved, coverage = model.mask_memory.moved_past(step["kept"])
                moved = moved + (1 - coverage) * past  # where nothing landed: as kept
                row = rows[kind]
                row["kept"].append(mean_iou(embeddings, reference["current"], past))
                row["moved"].append(mean_iou(embeddings, reference["current"], moved))
                row["own"].append(mean_iou(embeddings, reference["current"], step["current"]))
                row["shifted"].append(mean_iou(embeddings, reference["current"], past,
                                               SHIFT_ORACLE_RADIUS))
                row["coverage"].append(float(coverage.mean()))
        print(f"video {video + 1}/{args.videos}", file=sys.stderr, flush=True)

    print(f"\n{args.videos} synthetic videos (first {args.first_video}), {args.frames} frames, "
          f"checkpoint {args.checkpoint}; mean mask IoU with the clean frame's own masks\n")
    print("| frames | count | own features | last frame's, as kept | last frame's, moved on "
          "| cells covered | last frame's, best shift per query (oracle) |")
    print("|---|---|---|---|---|---|---|")
    for kind in ["clean", *sorted(k for k in rows if k != "clean")]:
        row = rows[kind]
        own = "1.000 (the reference)" if kind == "clean" else f"{np.nanmean(row['own']):.3f}"
        print(f"| {kind} | {len(row['kept'])} | {own} | {np.nanmean(row['kept']):.3f} | "
              f"{np.nanmean(row['moved']):.3f} | {np.mean(row['coverage']):.1%} | "
              f"{np.nanmean(row['shifted']):.3f} |")


if __name__ == "__main__":
    main()
