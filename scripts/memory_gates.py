#!/usr/bin/env python3
"""Print the memory-attention gates of MetaSegmenter checkpoints (how open the memory is).

    .venv/bin/python scripts/memory_gates.py metaseg_ros/weights/metaseg_tiny \
        runs/tiny_memory_degraded/checkpoints/step_*

Each decoder layer adds tanh(gate) * attention(memory) to its queries: at gate 0 the model is
the image Mask2Former, and |tanh(gate)| says how much of the memory a layer lets through. A
model with the pixel memory read (memory.pixel_read) has one more gate, printed after them.
With content gates (memory.content_gate) these are each gate's bias: the gate of a query or
pixel adds what its MLP says, so scripts/content_gates.py measures them on videos.
The mask-feature carry (memory.past_mask_features) has a per-pixel gate that depends on the
frame; only its presence is printed (scripts/content_gates.py measures it on videos).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from safetensors.numpy import load_file

from metaseg_ros.model.checkpoint import checkpoint_paths


def gates(checkpoint: str) -> tuple[list[float], float | None, bool, bool]:
    """The gate of every decoder layer, in layer order, the pixel memory read's (None
    without one), whether the gates are content gates and whether the model has the
    mask-feature carry (checkpoint: its path with or without the suffix, or a training
    checkpoint directory holding model.safetensors)."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "model"
    path = checkpoint_paths(path)[0]
    if not path.is_file():
        print(f"memory_gates: no checkpoint at {path}", file=sys.stderr)
        raise SystemExit(2)
    state = load_file(str(path))
    names = sorted((k for k in state if k.endswith("memory_attn.gate")),
                   key=lambda k: int(k.split(".layers.")[1].split(".")[0]))
    pixel = state.get("pixel_memory.attention.gate")
    return ([float(state[name].reshape(-1)[0]) for name in names],
            None if pixel is None else float(pixel.reshape(-1)[0]),
            any(".content_gate." in k for k in state),
            any(k.startswith("mask_memory.") for k in state))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    for checkpoint in parser.parse_args().checkpoints:
        values, pixel, content, carry = gates(checkpoint)
        largest = max((abs(math.tanh(v)) for v in values), default=0.0)
        read = "" if pixel is None else f"; pixel read {pixel:+.4f}"
        print(f"{checkpoint}: gates {' '.join(f'{v:+.4f}' for v in values)}; "
              f"largest |tanh(gate)| {largest:.4f}{read}"
              + ("; content gates: these are their biases" if content else "")
              + ("; mask-feature carry: a per-pixel gate, scripts/content_gates.py measures it"
                 if carry else ""))


if __name__ == "__main__":
    main()
