"""Our checkpoint format: safetensors + JSON config, strict key and shape reporting."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from metaseg_ros.classes import COCO_CLASSES
from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    load_checkpoint_config,
    save_checkpoint,
)

SIZE = (64, 64)


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    config = get_config("tiny", image_size=SIZE, num_queries=10, class_names=COCO_CLASSES)
    model = MetaSegmenter(config).eval()
    for layer in model.transformer_decoder.layers:  # non-default state must survive
        layer.memory_attn.gate.data.fill_(0.25)
    weights, config_path = save_checkpoint(model, tmp_path / "model", extra={"source": "test"})
    return model, weights, config_path


def test_round_trip_gives_identical_outputs(saved):
    model, weights, config_path = saved
    assert weights.name == "model.safetensors" and config_path.name == "model.json"
    document = json.loads(config_path.read_text())
    assert document["config"]["class_names"] == list(COCO_CLASSES)
    assert document["extra"] == {"source": "test"}
    loaded = load_checkpoint(weights)
    assert loaded.config == model.config and loaded.class_names == COCO_CLASSES
    images = torch.rand(1, 3, *SIZE) * 255
    with torch.no_grad():
        first = model(images, model.initial_memory(1))
        again = loaded(images, loaded.initial_memory(1))
        first = model(images, first.memory)
        again = loaded(images, again.memory)
    assert torch.equal(first.class_logits, again.class_logits)
    assert torch.equal(first.mask_logits, again.mask_logits)


def test_paths_with_or_without_suffix(tmp_path):
    assert checkpoint_paths(tmp_path / "a.json") == checkpoint_paths(tmp_path / "a")
    assert checkpoint_paths(tmp_path / "a.safetensors")[0] == tmp_path / "a.safetensors"


def test_missing_and_unexpected_keys_are_named(saved):
    _, weights, _ = saved
    state = load_file(str(weights))
    state.pop("transformer_decoder.class_embed.bias")
    state["transformer_decoder.extra_head.weight"] = torch.zeros(2)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(weights)
    message = str(error.value)
    assert "missing keys (1): transformer_decoder.class_embed.bias" in message
    assert "unexpected keys (1): transformer_decoder.extra_head.weight" in message
    loaded = load_checkpoint(weights, strict=False)  # non-strict loads what matches
    assert isinstance(loaded, MetaSegmenter)
    loaded_state = loaded.state_dict()
    assert "transformer_decoder.extra_head.weight" not in loaded_state
    matching = set(state) & set(loaded_state)
    assert matching == set(loaded_state) - {"transformer_decoder.class_embed.bias"}
    for name in matching:  # every saved tensor arrived unchanged (the 0.25 gates among them)
        assert torch.equal(loaded_state[name], state[name]), name


def test_shape_mismatch_stops_with_a_clear_error(saved):
    _, weights, _ = saved
    state = load_file(str(weights))
    state["transformer_decoder.class_embed.weight"] = torch.zeros(21, 128)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"class_embed.weight: checkpoint \(21, 128\) "
                                              r"vs model \(81, 128\)"):
        load_checkpoint(weights, strict=False)


def test_config_file_is_validated(tmp_path, saved):
    _, _, config_path = saved
    document = json.loads(config_path.read_text())
    document["format"] = "something-else"
    config_path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="not a metaseg-checkpoint"):
        load_checkpoint_config(config_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent")
