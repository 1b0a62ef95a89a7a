"""Our checkpoint format: <name>.safetensors (weights) + <name>.json (config incl. class names).

Loading never unpickles: safetensors only. Keys are checked by name: missing and unexpected
keys are reported (an error when strict), shape mismatches always stop with an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from metaseg_ros.errors import CheckpointError  # re-exported: raised here
from metaseg_ros.model.config import MetaSegConfig, config_from_dict, config_to_dict
from metaseg_ros.model.metasegmenter import MetaSegmenter

FORMAT_NAME = "metaseg-checkpoint"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class KeyReport:
    """Result of matching a state dict against a model, by parameter name."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every key matched."""
        return not self.missing and not self.unexpected

    def describe(self) -> str:
        """Human-readable list of the problems (empty when ok)."""
        lines = []
        if self.missing:
            lines.append(f"missing keys ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append(f"unexpected keys ({len(self.unexpected)}): "
                         + ", ".join(self.unexpected))
        return "\n".join(lines)


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(<stem>.safetensors, <stem>.json) for a path given with or without either suffix."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def load_state_dict_checked(model: nn.Module, state: dict[str, Tensor], strict: bool = True
                            ) -> KeyReport:
    """Copy state into model after checking names and shapes.

    Shape mismatches raise CheckpointError listing every mismatched key; missing or
    unexpected keys raise when strict, else they are returned in the report.
    """
    expected = model.state_dict()
    mismatched = [f"{name}: checkpoint {tuple(value.shape)} vs model "
                  f"{tuple(expected[name].shape)}"
                  for name, value in state.items()
                  if name in expected and tuple(value.shape) != tuple(expected[name].shape)]
    if mismatched:
        raise CheckpointError("shape mismatch:\n  " + "\n  ".join(mismatched))
    report = KeyReport(tuple(sorted(set(expected) - set(state))),
                       tuple(sorted(set(state) - set(expected))))
    if strict and not report.ok:
        raise CheckpointError(report.describe())
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return report


def save_checkpoint(model: MetaSegmenter, path: str | Path,
                    extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write <path>.safetensors and <path>.json; returns both paths.

    extra: optional JSON-able provenance (e.g. the converted source) stored in the JSON.
    """
    weights_path, config_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights_path), metadata={"format": "pt", "producer": FORMAT_NAME})
    document = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                "config": config_to_dict(model.config)}
    if extra:
        document["extra"] = extra
    config_path.write_text(json.dumps(document, indent=2) + "\n")
    return weights_path, config_path


def load_checkpoint_config(path: str | Path) -> MetaSegConfig:
    """The config stored beside a checkpoint (CheckpointError naming the file if it is
    missing, not JSON, not ours or not a valid config)."""
    _, config_path = checkpoint_paths(path)
    try:
        document = json.loads(config_path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"checkpoint config {config_path} not found") from error
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"{config_path} is not a readable JSON checkpoint config "
                              f"({error})") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{config_path} is not a {FORMAT_NAME} config")
    if document.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: unsupported version {document.get('version')}")
    try:
        return config_from_dict(document["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path}: invalid model config ({error})") from error


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    strict: bool = True) -> MetaSegmenter:
    """Build the model from <path>.json and load <path>.safetensors (eval mode)."""
    weights_path, _ = checkpoint_paths(path)
    config = load_checkpoint_config(path)
    model = MetaSegmenter(config)
    if not weights_path.exists():
        raise CheckpointError(f"checkpoint weights {weights_path} not found")
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except Exception as error:  # safetensors raises its own error type for a bad file
        raise CheckpointError(f"{weights_path} is not a readable safetensors file (truncated "
                              f"or corrupted?): {error}") from error
    model.to(map_location)
    try:
        load_state_dict_checked(model, state, strict=strict)
    except CheckpointError as error:
        raise CheckpointError(f"{weights_path} does not fit its config "
                              f"({config.name}): {error}") from error
    return model.eval()
