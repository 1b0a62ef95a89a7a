"""What the space-time memory costs per frame, memory on vs off in one run (issue 14, sec. 5).

    .venv/bin/python scripts/bench_memory_cost.py --configs tiny r50 --frames 30 --threads 1

For each model config (random weights: the cost does not depend on them; tiny at 256x256
as shipped, r50 at its preset size unless --size), the eager forward of one frame at batch 1
is timed in two variants, interleaved frame by frame so that load changes hit both alike:
- on: the network as shipped (memory reader, gated memory attention in every decoder layer,
  the new frame's features projected and written into the ring);
- off: the same network with the memory path removed (no reader, every memory attention
  the identity, no pixel read, nothing projected or written).
With --pixel-read [STRIDE ...] each config is measured again with memory.pixel_read on (the
pixel features read the stored ones; stored maps at each stride given, default 32); with
--carry, with memory.past_mask_features on (the gate and blend counted, the kept mask
features in the ring's bytes); with --motion, also with memory.past_mask_motion (the flow
measured and the kept features moved on every frame).
Printed: median ms per frame on and off, their difference and its share of the "on" step,
the time inside the memory modules measured by hooks during the "on" frames (reader,
memory attention, write projection + ring write), and the ring's size in bytes (float32,
batch 1), which does not grow with the stream (test/test_model_memory_bounded.py).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator

import torch
from torch import nn

from metaseg_ros.model import metasegmenter as metasegmenter_module
from metaseg_ros.model.config import get_config
from metaseg_ros.model.memory import MemoryAttention, MemoryReader, MemoryState
from metaseg_ros.model.metasegmenter import MetaSegmenter


def ring_bytes(memory: MemoryState) -> int:
    """Bytes of every tensor of a memory ring."""
    return sum(t.numel() * t.element_size() for t in memory)


@contextlib.contextmanager
def memory_removed(model: MetaSegmenter) -> Iterator[None]:
    """The memory path skipped: reader, attentions and the ring write do nothing."""
    attention_forward, reader_forward = MemoryAttention.forward, MemoryReader.forward
    write, projection = metasegmenter_module.write_frame, model.memory_write_proj
    pixel_read, mask_carry = model.pixel_memory, model.mask_memory
    MemoryAttention.forward = lambda self, query, query_pos, tokens: query
    MemoryReader.forward = lambda self, memory, query_pos: None
    metasegmenter_module.write_frame = lambda memory, *written: memory
    model.memory_write_proj = nn.Identity()
    model.pixel_memory = model.mask_memory = None
    try:
        yield
    finally:
        MemoryAttention.forward, MemoryReader.forward = attention_forward, reader_forward
        metasegmenter_module.write_frame = write
        model.memory_write_proj = projection
        model.pixel_memory, model.mask_memory = pixel_read, mask_carry


class ModuleTimer:
    """Wall time spent inside chosen modules (forward pre/post hooks) and the ring write."""

    def __init__(self, model: MetaSegmenter) -> None:
        self.seconds = 0.0
        self._started: dict[int, float] = {}
        modules = [model.memory_reader, model.memory_write_proj,
                   *(layer.memory_attn for layer in model.transformer_decoder.layers),
                   *(part for part in (model.pixel_memory, model.mask_memory)
                     if part is not None)]
        for module in modules:
            module.register_forward_pre_hook(self._pre)
            module.register_forward_hook(self._post)
        original = metasegmenter_module.write_frame

        def timed_write(memory: MemoryState, *written: torch.Tensor | None) -> MemoryState:
            started = time.perf_counter()
            result = original(memory, *written)
            self.seconds += time.perf_counter() - started
            return result

        metasegmenter_module.write_frame = timed_write

    def _pre(self, module: nn.Module, inputs: object) -> None:
        self._started[id(module)] = time.perf_counter()

    def _post(self, module: nn.Module, inputs: object, output: object) -> None:
        self.seconds += time.perf_counter() - self._started.pop(id(module))


def measure(name: str, size: tuple[int, int] | None, frames: int, warmup: int,
            pixel_read_stride: int | None = None, carry: bool = False,
            motion: bool = False) -> None:
    """Time one config on vs off and print a markdown row; pixel_read_stride: with the
    pixel read, the stored maps at this stride; carry: with the mask-feature carry; motion:
    the carry moved on by the flow."""
    overrides: dict = {} if size is None else {"image_size": size}
    if pixel_read_stride is not None:
        overrides["memory"] = {"pixel_read": True, "pool_stride": pixel_read_stride}
    if carry:
        overrides["memory"] = {"past_mask_features": True, "past_mask_motion": motion}
    model = MetaSegmenter(get_config(name, **overrides)).eval()
    height, width = model.config.image_size
    images = torch.rand(1, 3, height, width) * 255
    timer = ModuleTimer(model)
    on_times, off_times, inside = [], [], []
    with torch.no_grad():
        memory = model.initial_memory(1)
        for index in range(warmup + frames):
            timer.seconds = 0.0
            started = time.perf_counter()
            memory = model(images, memory).memory
            on = time.perf_counter() - started
            module_seconds = timer.seconds
            with memory_removed(model):
                started = time.perf_counter()
                model(images, memory)
                off = time.perf_counter() - started
            if index >= warmup:
                on_times.append(on)
                off_times.append(off)
                inside.append(module_seconds)
    on_ms = 1000 * statistics.median(on_times)
    off_ms = 1000 * statistics.median(off_times)
    inside_ms = 1000 * statistics.median(inside)
    label = name if pixel_read_stride is None else \
        f"{name} + pixel read (stride {pixel_read_stride})"
    if carry:
        label = f"{name} + mask-feature carry" + (" with motion" if motion else "")
    print(f"| {label} | {width}x{height} | {model.config.memory_frames} | {on_ms:.1f} | "
          f"{off_ms:.1f} | {on_ms - off_ms:+.1f} ({(on_ms - off_ms) / on_ms:+.1%}) | "
          f"{inside_ms:.1f} ({inside_ms / on_ms:.1%}) | {ring_bytes(memory)} |", flush=True)


def main() -> None:
    """Parse arguments and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "r50"])
    parser.add_argument("--tiny-size", type=int, nargs=2, default=[256, 256],
                        help="tiny's input (the shipped model's)")
    parser.add_argument("--size", type=int, nargs=2, help="input size of the other configs")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pixel-read", type=int, nargs="*", metavar="STRIDE",
                        help="also each config with memory.pixel_read, the stored maps at each "
                             "STRIDE given (default 32, as tiny_synthetic_cpu_memory_pixels.yaml;"
                             " 16 as tiny_synthetic_cpu_memory_fine.yaml)")
    parser.add_argument("--carry", action="store_true",
                        help="also each config with memory.past_mask_features (the last "
                             "frame's mask features kept and blended in)")
    parser.add_argument("--motion", action="store_true",
                        help="also each config with the carry moved on by the flow "
                             "(memory.past_mask_motion)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU, {args.threads} thread(s), batch 1, eager float32, {args.frames} frames "
          "(medians)\n")
    print("| config | input | ring frames | on ms | off ms | memory ms (share of step) | "
          "inside memory modules ms (share) | ring bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.configs:
        size = tuple(args.tiny_size) if name == "tiny" else (
            tuple(args.size) if args.size else None)
        measure(name, size, args.frames, args.warmup)
        for stride in ([32] if args.pixel_read == [] else args.pixel_read or []):
            measure(name, size, args.frames, args.warmup, pixel_read_stride=stride)
        if args.carry:
            measure(name, size, args.frames, args.warmup, carry=True)
        if args.motion:
            measure(name, size, args.frames, args.warmup, carry=True, motion=True)


if __name__ == "__main__":
    main()
