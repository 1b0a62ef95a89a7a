"""Compact copies of trained checkpoints for shipping (half-precision weights).

The package ships the default model's weights in float16 to stay small (the `tiny`
network has ~6.6 M parameters: 26 MB in float32, 13 MB in float16). Loading is
unchanged: metaseg_ros.model.checkpoint.load_checkpoint copies the float16 values into
the float32 parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metaseg_ros.model.checkpoint import checkpoint_paths


def save_half_precision_copy(source: str | Path, destination: str | Path,
                             dtype: torch.dtype = torch.float16) -> tuple[Path, Path]:
    """Copy a checkpoint (weights + JSON config) with floating-point tensors in dtype.

    Returns the (weights, config) paths written. Integer tensors are kept as they are.
    """
    source_weights, source_config = checkpoint_paths(source)
    weights_path, config_path = checkpoint_paths(destination)
    state = load_file(str(source_weights))
    compact = {name: value.to(dtype) if value.is_floating_point() else value
               for name, value in state.items()}
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(compact, str(weights_path),
              metadata={"format": "pt", "producer": "metaseg-checkpoint",
                        "weights_dtype": str(dtype).removeprefix("torch.")})
    document = json.loads(source_config.read_text())
    document.setdefault("extra", {})["weights_dtype"] = str(dtype).removeprefix("torch.")
    config_path.write_text(json.dumps(document, indent=2) + "\n")
    return weights_path, config_path
