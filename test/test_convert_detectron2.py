"""Detectron2 .pkl checkpoints: restricted unpickling and conversion of the real key layout."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch

from metaseg_ros.classes import COCO_CLASSES
from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.convert import ConversionError
from metaseg_ros.model.convert.detectron2 import convert_detectron2_checkpoint
from metaseg_ros.model.convert.safe_pickle import load_detectron2_pickle, restricted_loads
from metaseg_ros.model.layers import video_time_embedding


class _RunsShellCommand:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _CallsEval:
    def __reduce__(self):
        return eval, ("__import__('os').getcwd()",)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.zeros(2)},
                                   "evil": _RunsShellCommand(str(marker))}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global '(posix|os)"
                                                     r"\.system'"):
        load_detectron2_pickle(path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        restricted_loads(pickle.dumps(_CallsEval()))
    # A torch tensor pickle needs torch's rebuild functions: refused as well.
    with pytest.raises(pickle.UnpicklingError, match="torch"):
        restricted_loads(pickle.dumps({"w": torch.zeros(2)}))


def test_non_numeric_entries_are_refused(tmp_path):
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.array(["a", "b"])}}))
    with pytest.raises(ValueError, match="not a numeric array"):
        load_detectron2_pickle(path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="expected a dict"):
        load_detectron2_pickle(path)


def test_python2_era_numpy_pickles_load(tmp_path):
    # Protocol 2 with numpy-1 module names, as in old model-zoo files.
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = pickle.dumps({"model": {"w": array, "n": np.int64(3)}, "__author__": "FAIR"},
                        protocol=2)
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data)
    loaded = load_detectron2_pickle(path)
    np.testing.assert_array_equal(loaded["w"], array)
    assert loaded["n"].item() == 3


def _to_detectron2_names(model: MetaSegmenter) -> dict[str, np.ndarray]:
    """Our weights under the key names of facebookresearch/Mask2Former's Detectron2 modules
    (MaskFormer + MSDeformAttnPixelDecoder + MultiScaleMaskedTransformerDecoder)."""
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()
             if "memory" not in k and not k.endswith("num_batches_tracked")}
    out: dict[str, np.ndarray] = {}
    packed: dict[str, list[np.ndarray]] = {}
    for key, value in state.items():
        name = key
        if key.startswith("backbone.") and model.config.backbone.kind == "resnet":
            name = re.sub(r"^backbone\.conv1\.", "backbone.stem.conv1.", name)
            name = re.sub(r"^backbone\.bn1\.", "backbone.stem.conv1.norm.", name)
            name = re.sub(r"^backbone\.layer(\d)\.",
                          lambda m: f"backbone.res{int(m.group(1)) + 1}.", name)
            name = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", name)
            name = name.replace(".downsample.0.", ".shortcut.")
            name = name.replace(".downsample.1.", ".shortcut.norm.")
        pd = "sem_seg_head.pixel_decoder."
        name = re.sub(r"^pixel_decoder\.input_proj\.", pd + "input_proj.", name)
        name = re.sub(r"^pixel_decoder\.level_embed$", pd + "transformer.level_embed", name)
        name = re.sub(r"^pixel_decoder\.encoder\.", pd + "transformer.encoder.layers.", name)
        name = re.sub(r"^pixel_decoder\.mask_features\.", pd + "mask_features.", name)
        name = re.sub(r"^pixel_decoder\.lateral_conv\.0\.", pd + "adapter_1.", name)
        name = re.sub(r"^pixel_decoder\.lateral_conv\.1\.", pd + "adapter_1.norm.", name)
        name = re.sub(r"^pixel_decoder\.output_conv\.0\.", pd + "layer_1.", name)
        name = re.sub(r"^pixel_decoder\.output_conv\.1\.", pd + "layer_1.norm.", name)
        p = "sem_seg_head.predictor."
        name = re.sub(r"^transformer_decoder\.(query_feat|query_embed|level_embed)$",
                      p + r"\1.weight", name)
        name = re.sub(r"^transformer_decoder\.(decoder_norm|class_embed)\.", p + r"\1.", name)
        name = re.sub(r"^transformer_decoder\.mask_embed\.", p + "mask_embed.", name)
        layer = re.match(r"^transformer_decoder\.layers\.(\d+)\.(.*)$", name)
        if layer:
            index, rest = layer.groups()
            sa = f"{p}transformer_self_attention_layers.{index}."
            ca = f"{p}transformer_cross_attention_layers.{index}."
            ffn = f"{p}transformer_ffn_layers.{index}."
            qkv = re.match(r"(self_attn|cross_attn)\.([qkv])_proj\.(weight|bias)", rest)
            if qkv:
                module = sa + "self_attn." if qkv.group(1) == "self_attn" else \
                    ca + "multihead_attn."
                packed.setdefault(f"{module}in_proj_{qkv.group(3)}", []).append(value)
                continue
            rest = re.sub(r"^self_attn\.out_proj\.", sa + "self_attn.out_proj.", rest)
            rest = re.sub(r"^self_attn_norm\.", sa + "norm.", rest)
            rest = re.sub(r"^cross_attn\.out_proj\.", ca + "multihead_attn.out_proj.", rest)
            rest = re.sub(r"^cross_attn_norm\.", ca + "norm.", rest)
            rest = re.sub(r"^(linear1|linear2)\.", ffn + r"\1.", rest)
            rest = re.sub(r"^ffn_norm\.", ffn + "norm.", rest)
            name = rest
        out[name] = value
    for name, parts in packed.items():  # q, k, v were visited in that order
        out[name] = np.concatenate(parts, axis=0)
    out["criterion.empty_weight"] = np.ones(model.config.num_classes + 1, dtype=np.float32)
    return out


@pytest.mark.parametrize("preset", ["r50", "swin-t"])
def test_detectron2_layout_converts_to_the_same_outputs(tmp_path, preset):
    torch.manual_seed(0)
    config = get_config(preset, image_size=(64, 64), num_queries=10, num_decoder_layers=4,
                        class_names=COCO_CLASSES,
                        pixel_decoder={"encoder_layers": 2})
    source = MetaSegmenter(config).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and biases
        for name, tensor in source.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif tensor.is_floating_point() and "memory" not in name:
                tensor.add_(torch.randn_like(tensor) * 0.02)
    weights = _to_detectron2_names(source)
    expected_names = {"backbone.res2.0.conv1.norm.running_var", "backbone.res5.2.conv3.weight",
                      "backbone.res3.0.shortcut.norm.weight"} if preset == "r50" else {
        "backbone.layers.2.blocks.5.attn.qkv.weight", "backbone.norm3.bias",
        "backbone.layers.0.downsample.reduction.weight"}
    expected_names |= {
        "sem_seg_head.pixel_decoder.transformer.encoder.layers.1.self_attn.sampling_offsets.bias",
        "sem_seg_head.pixel_decoder.adapter_1.norm.weight",
        "sem_seg_head.predictor.transformer_cross_attention_layers.3.multihead_attn."
        "in_proj_weight",
        "sem_seg_head.predictor.transformer_self_attention_layers.0.self_attn.in_proj_bias",
        "sem_seg_head.predictor.transformer_ffn_layers.2.linear1.weight",
        "sem_seg_head.predictor.query_feat.weight",
        "sem_seg_head.predictor.mask_embed.layers.2.bias",
    }
    assert expected_names <= set(weights)
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": weights, "__author__": "metaseg test",
                     "matching_heuristics": True}, handle)
    converted, report = convert_detectron2_checkpoint(path, class_names=COCO_CLASSES,
                                                      image_size=(64, 64))
    assert report.unused_source_keys == [] and report.ignored_source_keys == [
        "criterion.empty_weight"]
    assert converted.config.backbone == config.backbone
    assert converted.config.num_decoder_layers == 4 and converted.config.num_queries == 10
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        expected = source(images, source.initial_memory(2))
        got = converted(images, converted.initial_memory(2))
    torch.testing.assert_close(got.class_logits, expected.class_logits, atol=0, rtol=0)
    torch.testing.assert_close(got.mask_logits, expected.mask_logits, atol=0, rtol=0)


def test_wrong_class_count_and_unknown_layouts_are_reported(tmp_path):
    torch.manual_seed(0)
    model = MetaSegmenter(get_config("r50", image_size=(64, 64), num_decoder_layers=2,
                                     class_names=COCO_CLASSES[:5]))
    weights = _to_detectron2_names(model)
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"model": weights}))
    with pytest.raises(ConversionError, match="5 classes, 3 names"):
        convert_detectron2_checkpoint(path, class_names=("a", "b", "c"), image_size=(64, 64))
    weights["sem_seg_head.predictor.extra_head.weight"] = np.zeros(3, dtype=np.float32)
    weights.pop("sem_seg_head.predictor.decoder_norm.bias")
    path.write_bytes(pickle.dumps({"model": weights}))
    with pytest.raises(ConversionError) as error:
        convert_detectron2_checkpoint(path, image_size=(64, 64))
    assert "transformer_decoder.decoder_norm.bias" in str(error.value)
    assert "sem_seg_head.predictor.extra_head.weight" in str(error.value)


def test_cli_converts_a_detectron2_video_pickle_with_class_subset(tmp_path, capsys):
    from metaseg_ros.classes import DEFAULT_CLASSES
    from metaseg_ros.cli.convert import main
    from metaseg_ros.model.checkpoint import load_checkpoint

    torch.manual_seed(0)
    source = MetaSegmenter(get_config("r50", image_size=(64, 64), num_decoder_layers=3,
                                      num_queries=6, class_names=COCO_CLASSES)).eval()
    path = tmp_path / "video_model.pkl"
    path.write_bytes(pickle.dumps({"model": _to_detectron2_names(source),
                                   "__author__": "metaseg test"}))
    status = main([str(path), str(tmp_path / "video"), "--classes", "coco", "--keep-classes",
                   "default", "--video", "--image-size", "64", "64"])
    assert status == 0, capsys.readouterr().err
    converted = load_checkpoint(tmp_path / "video")
    assert converted.class_names == DEFAULT_CLASSES
    assert converted.config.decoder.video_pos_embedding
    images = torch.rand(1, 3, 64, 64) * 255
    image_out, image_key_pos = _run_capturing_key_positions(source, images)
    video_out, video_key_pos = _run_capturing_key_positions(converted, images)
    # Same weights, but every key position of the video model carries the 3-D embedding's
    # time term: a sine/cosine vector of unit-scale entries, far above rounding noise.
    time_term = video_time_embedding(converted.config.hidden_dim)
    assert time_term.abs().max() > 0.5
    for image_pos, video_pos in zip(image_key_pos, video_key_pos, strict=True):
        torch.testing.assert_close(video_pos - image_pos, time_term.expand_as(image_pos),
                                   atol=1e-5, rtol=0)
    # For one frame that term is the same at every key, so softmax cancels it: the video
    # checkpoint gives the image model's outputs (up to rounding).
    torch.testing.assert_close(video_out.mask_logits, image_out.mask_logits,
                               atol=1e-4, rtol=1e-4)


def _run_capturing_key_positions(model: MetaSegmenter, images: torch.Tensor
                                 ) -> tuple[object, list[torch.Tensor]]:
    """One frame through the model, recording the key position embedding of every decoder
    layer's masked cross-attention."""
    captured: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda _m, args: captured.append(args[3].clone()))
             for layer in model.transformer_decoder.layers]
    try:
        with torch.no_grad():
            output = model(images, model.initial_memory(1))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(captured) == len(model.transformer_decoder.layers)
    return output, captured
