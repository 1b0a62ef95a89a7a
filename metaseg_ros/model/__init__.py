"""MetaSegmenter network: backbones, pixel decoder, transformer decoder, memory."""

from metaseg_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metaseg_ros.model.config import (
    CONFIG_NAMES,
    BackboneConfig,
    DecoderConfig,
    MemoryConfig,
    MetaSegConfig,
    PixelDecoderConfig,
    config_from_dict,
    config_to_dict,
    get_config,
    replace_config,
)
from metaseg_ros.model.memory import MemoryState, empty_memory, reset_memory, write_frame
from metaseg_ros.model.metasegmenter import (
    MetaSegmenter,
    NetworkOutput,
    initial_memory,
    memory_shapes,
    step_input_shapes,
)
from metaseg_ros.model.pretrained import create_model

__all__ = [
    "CONFIG_NAMES",
    "BackboneConfig",
    "CheckpointError",
    "DecoderConfig",
    "MemoryConfig",
    "MemoryState",
    "MetaSegConfig",
    "MetaSegmenter",
    "NetworkOutput",
    "PixelDecoderConfig",
    "config_from_dict",
    "config_to_dict",
    "create_model",
    "empty_memory",
    "get_config",
    "initial_memory",
    "load_checkpoint",
    "memory_shapes",
    "replace_config",
    "reset_memory",
    "save_checkpoint",
    "step_input_shapes",
    "write_frame",
]
