"""Converters from public Mask2Former checkpoints to MetaSegmenter checkpoints."""

from metaseg_ros.model.convert.common import (
    ConversionError,
    ConversionReport,
    rename_classes,
    select_classes,
)
from metaseg_ros.model.convert.hf import (
    convert_hf_checkpoint,
    convert_hf_state_dict,
    hf_config_to_metaseg,
)

__all__ = [
    "ConversionError",
    "ConversionReport",
    "convert_hf_checkpoint",
    "convert_hf_state_dict",
    "hf_config_to_metaseg",
    "rename_classes",
    "select_classes",
]
