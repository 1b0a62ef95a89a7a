"""Configs: presets, overrides, validation and the JSON round trip stored beside checkpoints."""

from __future__ import annotations

import json

import pytest

from metaseg_ros.classes import COCO_CLASSES, DEFAULT_CLASSES
from metaseg_ros.model import (
    CONFIG_NAMES,
    MemoryConfig,
    config_from_dict,
    config_to_dict,
    get_config,
)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_presets_round_trip_through_json(name):
    config = get_config(name)
    restored = config_from_dict(json.loads(json.dumps(config_to_dict(config))))
    assert restored == config
    assert config.num_classes == len(DEFAULT_CLASSES) == 20
    assert config.image_size == (512, 512)


def test_preset_architecture_facts():
    tiny = get_config("tiny")
    assert tiny.backbone.kind == "efficientnet_lite0"
    assert tiny.num_decoder_layers == 6 and tiny.hidden_dim == 128
    r50 = get_config("r50")
    assert (r50.backbone.kind, r50.backbone.depth) == ("resnet", 50)
    assert (r50.num_decoder_layers, r50.num_queries, r50.hidden_dim) == (9, 100, 256)
    assert get_config("swin-l").num_queries == 200
    assert get_config("swin-b").backbone.window_size == 12
    assert r50.memory_size == (8, 8) and r50.mask_size == (128, 128)


def test_overrides_accept_nested_dicts_and_lists():
    config = get_config("tiny", image_size=[128, 256], class_names=list(COCO_CLASSES),
                        memory={"pool_stride": 32}, memory_frames=8)
    assert config.image_size == (128, 256)
    assert config.num_classes == 80
    assert config.memory == MemoryConfig(feature_dim=128, pool_stride=32, num_heads=4)
    assert config.memory_size == (4, 8)
    assert config.memory_frames == 8


@pytest.mark.parametrize("overrides, message", [
    ({"image_size": (100, 128)}, "divisible"),
    ({"memory": {"pool_stride": 48}}, "multiple of 32"),
    ({"memory": {"pool_stride": 8}}, "16 or a positive multiple of 32"),
    ({"class_names": ()}, "empty"),
    ({"hidden_dim": 130}, "heads"),
    ({"backbone": {"kind": "vgg"}}, "backbone.kind"),
])
def test_invalid_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_config("tiny", **overrides)


def test_unknown_names_and_keys_are_refused():
    with pytest.raises(ValueError, match="unknown config"):
        get_config("r18-mystery")
    with pytest.raises(ValueError, match="no field"):
        get_config("tiny", hidden=64)
    data = config_to_dict(get_config("tiny"))
    data["decoder"]["layers"] = 3
    with pytest.raises(ValueError, match="unknown decoder keys"):
        config_from_dict(data)
