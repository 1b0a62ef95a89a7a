"""Shared machinery of the checkpoint converters: renaming rules, key accounting, class subsets.

A converter turns a source state dict into ours with explicit rules. Every source key must be
used by a rule or be on the converter's list of known-irrelevant keys (loss buffers, BatchNorm
counters, derivable index buffers); every parameter of our model must be filled, except those
of the memory bank, which a Mask2Former image checkpoint does not have: they are initialised
fresh with every gate at 0, where MetaSegmenter computes exactly the image model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from metaseg_ros.model.checkpoint import CheckpointError
from metaseg_ros.model.config import MetaSegConfig, replace_config
from metaseg_ros.model.metasegmenter import MetaSegmenter

# Our parameters that no Mask2Former checkpoint has (initialised fresh, gate = 0).
MEMORY_KEY_PATTERN = re.compile(r"^(memory_write_proj|memory_reader)\.|\.memory_attn\.")


class ConversionError(CheckpointError):
    """A source checkpoint cannot be converted (unknown keys, missing keys, bad layout)."""


@dataclass
class ConversionReport:
    """What a conversion did with every key."""

    source_keys: int = 0
    converted_keys: int = 0
    ignored_source_keys: list[str] = field(default_factory=list)
    unused_source_keys: list[str] = field(default_factory=list)
    fresh_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the command line."""
        lines = [f"converted {self.converted_keys} tensors from {self.source_keys} source keys",
                 f"ignored {len(self.ignored_source_keys)} known-irrelevant source keys",
                 f"initialised {len(self.fresh_keys)} memory-bank tensors fresh (gates at 0)"]
        if self.unused_source_keys:
            lines.append(f"UNUSED source keys ({len(self.unused_source_keys)}): "
                         + ", ".join(self.unused_source_keys))
        lines.extend(self.notes)
        return "\n".join(lines)


Rule = tuple[str, str]  # (regex fully matching a source key, replacement for re.sub)


class KeyMapper:
    """Applies renaming rules and custom handlers to a source state dict, tracking every key."""

    def __init__(self, source: dict[str, Tensor], ignore: Iterable[str]) -> None:
        self.source = source
        self.ignore_patterns = [re.compile(p) for p in ignore]
        self.target: dict[str, Tensor] = {}
        self.used: set[str] = set()

    def take(self, key: str) -> Tensor:
        """Read a source key and mark it used (KeyError naming the key when absent)."""
        if key not in self.source:
            raise ConversionError(f"source checkpoint lacks {key}")
        self.used.add(key)
        return self.source[key]

    def put(self, key: str, value: Tensor) -> None:
        """Set a target key (each target key may be set once)."""
        if key in self.target:
            raise ConversionError(f"two source keys map to {key}")
        self.target[key] = value

    def rename(self, rules: Iterable[Rule]) -> None:
        """Copy every unused source key that fully matches a rule to its renamed target."""
        compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
        for key in list(self.source):
            if key in self.used:
                continue
            for pattern, replacement in compiled:
                if pattern.fullmatch(key):
                    self.put(pattern.sub(replacement, key), self.take(key))
                    break

    def each_match(self, pattern: str, handler: Callable[[re.Match[str]], None]) -> None:
        """Call handler for every unused source key fully matching pattern."""
        compiled = re.compile(pattern)
        for key in list(self.source):
            match = compiled.fullmatch(key)
            if match and key not in self.used:
                handler(match)

    def leftovers(self) -> tuple[list[str], list[str]]:
        """(ignored known-irrelevant keys, unused unknown keys) among the unused source keys."""
        ignored, unused = [], []
        for key in self.source:
            if key in self.used:
                continue
            if any(p.search(key) for p in self.ignore_patterns):
                ignored.append(key)
            else:
                unused.append(key)
        return ignored, unused


def split_in_proj(weight: Tensor, bias: Tensor | None) -> list[tuple[Tensor, Tensor | None]]:
    """Split a packed (3D, D) q/k/v projection (nn.MultiheadAttention) into three."""
    weights = weight.chunk(3, dim=0)
    biases = bias.chunk(3, dim=0) if bias is not None else (None, None, None)
    return list(zip(weights, biases, strict=True))


def assemble_model(config: MetaSegConfig, mapper: KeyMapper, strict: bool = True
                   ) -> tuple[MetaSegmenter, ConversionReport]:
    """Build our model from the mapped tensors, checking names and shapes.

    Raises ConversionError for shape mismatches, our parameters left unfilled (memory bank
    excepted) and, when strict, source keys that no rule used.
    """
    model = MetaSegmenter(config)
    expected = model.state_dict()
    ignored, unused = mapper.leftovers()
    problems = []
    unknown_targets = sorted(set(mapper.target) - set(expected))
    if unknown_targets:
        problems.append("mapped to keys our model does not have: " + ", ".join(unknown_targets))
    mismatched = [f"{k}: source {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                  for k, v in mapper.target.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if mismatched:
        problems.append("shape mismatch:\n  " + "\n  ".join(mismatched))
    fresh = [k for k in expected if k not in mapper.target and MEMORY_KEY_PATTERN.search(k)]
    missing = [k for k in expected if k not in mapper.target and k not in fresh
               and not k.endswith("num_batches_tracked")]
    if missing:
        problems.append(f"missing in the source ({len(missing)}): " + ", ".join(missing))
    if strict and unused:
        problems.append(f"unexpected source keys ({len(unused)}): " + ", ".join(unused))
    if problems:
        raise ConversionError("\n".join(problems))
    state = dict(expected)
    for key, value in mapper.target.items():
        state[key] = value.detach().to(expected[key].dtype).clone()
    model.load_state_dict(state)
    report = ConversionReport(source_keys=len(mapper.source), converted_keys=len(mapper.target),
                              ignored_source_keys=ignored, unused_source_keys=unused,
                              fresh_keys=fresh)
    return model.eval(), report


def select_classes(model: MetaSegmenter, class_names: Iterable[str]) -> MetaSegmenter:
    """A copy of model that predicts only the given classes (by name), in the given order.

    Slices the rows of the class head; the no-object row (last) is kept.
    """
    wanted = list(class_names)
    known = list(model.class_names)
    absent = [name for name in wanted if name not in known]
    if absent:
        raise ConversionError(f"classes not in the checkpoint: {absent}")
    rows = [known.index(name) for name in wanted] + [len(known)]
    config: MetaSegConfig = replace_config(model.config, class_names=tuple(wanted))
    subset = MetaSegmenter(config)
    state = model.state_dict()
    index = torch.tensor(rows)
    for suffix in ("weight", "bias"):
        key = f"transformer_decoder.class_embed.{suffix}"
        state[key] = state[key].index_select(0, index)
    subset.load_state_dict(state)
    return subset.eval()


def rename_classes(model: MetaSegmenter, class_names: Iterable[str]) -> MetaSegmenter:
    """A copy of model whose classes carry new names (same count, same order, same weights)."""
    names = tuple(class_names)
    if len(names) != model.config.num_classes:
        raise ConversionError(f"{len(names)} names given for {model.config.num_classes} classes")
    renamed = MetaSegmenter(replace_config(model.config, class_names=names))
    renamed.load_state_dict(model.state_dict())
    return renamed.eval()
