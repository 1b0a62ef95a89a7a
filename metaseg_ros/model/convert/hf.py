"""Hugging Face transformers Mask2Former checkpoints -> MetaSegmenter.

Reads a model directory (config.json + model.safetensors, sharded safetensors, or
pytorch_model.bin loaded with torch.load(weights_only=True)), e.g. the
facebook/mask2former-swin-*-coco-instance family, or a state dict of a live
Mask2FormerForUniversalSegmentation. Both the on-disk key names (attention.self.query,
intermediate.dense, ...) and the in-memory names of transformers >= 5 (attention.q_proj,
mlp.fc1, swin.encoder, ...) are accepted.

HF Mask2Former's ``decoder_layers`` counts the prediction on the learned queries as a layer:
decoder_layers=10 means 9 transformer layers, our num_decoder_layers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from metaseg_ros.model.config import (
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    BackboneConfig,
    DecoderConfig,
    MemoryConfig,
    MetaSegConfig,
    PixelDecoderConfig,
)
from metaseg_ros.model.convert.common import (
    ConversionError,
    ConversionReport,
    KeyMapper,
    assemble_model,
    split_in_proj,
)
from metaseg_ros.model.metasegmenter import MetaSegmenter

RESNET_DEPTHS = {("bottleneck", (3, 4, 6, 3)): 50, ("bottleneck", (3, 4, 23, 3)): 101,
                 ("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34}
RESNET_WIDTHS = {"bottleneck": [256, 512, 1024, 2048], "basic": [64, 128, 256, 512]}

# Key names of transformers >= 5 (in memory) -> the names its checkpoints use on disk.
_NEW_TO_DISK: list[tuple[str, str]] = [
    (r"\.encoder\.swin\.embeddings\.", ".encoder.embeddings."),
    (r"\.encoder\.swin\.encoder\.", ".encoder.encoder."),
    (r"\.encoder\.swin\.layernorm\.", ".encoder.layernorm."),
    (r"\.attention\.q_proj\.", ".attention.self.query."),
    (r"\.attention\.k_proj\.", ".attention.self.key."),
    (r"\.attention\.v_proj\.", ".attention.self.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.attention\.relative_position_bias\.relative_position_bias_table$",
     ".attention.self.relative_position_bias_table"),
    (r"(\.blocks\.\d+)\.mlp\.fc1\.", r"\1.intermediate.dense."),
    (r"(\.blocks\.\d+)\.mlp\.fc2\.", r"\1.output.dense."),
]

HF_IGNORED = [r"^criterion\.", r"num_batches_tracked$", r"relative_position_index$",
              r"\.encoder\.layernorm\.", r"\.encoder\.pooler\."]

BACKBONE = r"model\.pixel_level_module\.encoder\."
PIXEL = r"model\.pixel_level_module\.decoder\."
TRANSFORMER = r"model\.transformer_module\."


def default_pool_stride(image_size: tuple[int, int]) -> int:
    """64 (8x8 memory at 512x512) when the image allows it, else 32."""
    return 64 if image_size[0] % 64 == 0 and image_size[1] % 64 == 0 else 32


def normalise_hf_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename in-memory transformers>=5 keys to the on-disk naming (idempotent)."""
    compiled = [(re.compile(p), r) for p, r in _NEW_TO_DISK]
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in compiled:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    return renamed


def _class_names(hf_config: dict[str, Any], num_labels: int) -> tuple[str, ...]:
    id2label = hf_config.get("id2label") or {}
    names = [str(id2label.get(str(i), id2label.get(i, f"class_{i}"))) for i in range(num_labels)]
    return tuple(names)


def _backbone_config(backbone: dict[str, Any]) -> BackboneConfig:
    kind = backbone.get("model_type")
    if kind == "resnet":
        layer_type = backbone.get("layer_type", "bottleneck")
        depths = tuple(backbone.get("depths", ()))
        depth = RESNET_DEPTHS.get((layer_type, depths))
        if depth is None:
            raise ConversionError(f"unsupported ResNet layout {layer_type} {list(depths)}")
        if list(backbone.get("hidden_sizes", [])) != RESNET_WIDTHS[layer_type] or \
                backbone.get("embedding_size", 64) != 64:
            raise ConversionError("only standard ResNet widths are supported")
        if backbone.get("downsample_in_bottleneck") or backbone.get("downsample_in_first_stage"):
            raise ConversionError("only torchvision-style ResNets (stride in the 3x3) are "
                                  "supported")
        return BackboneConfig(kind="resnet", depth=depth)
    if kind == "swin":
        if backbone.get("use_absolute_embeddings") or not backbone.get("qkv_bias", True):
            raise ConversionError("Swin with absolute embeddings or without qkv bias is not "
                                  "supported")
        if backbone.get("hidden_act", "gelu") != "gelu":
            raise ConversionError(f"Swin activation {backbone.get('hidden_act')} not supported")
        return BackboneConfig(kind="swin", embed_dim=int(backbone["embed_dim"]),
                              depths=tuple(backbone["depths"]),
                              num_heads=tuple(backbone["num_heads"]),
                              window_size=int(backbone["window_size"]),
                              mlp_ratio=float(backbone.get("mlp_ratio", 4.0)),
                              patch_size=int(backbone.get("patch_size", 4)))
    raise ConversionError(f"unsupported Mask2Former backbone {kind!r} (resnet and swin are)")


def hf_config_to_metaseg(hf_config: dict[str, Any], name: str,
                         image_size: tuple[int, int] = (512, 512),
                         memory_frames: int = 4,
                         pixel_mean: tuple[float, float, float] = IMAGENET_MEAN_255,
                         pixel_std: tuple[float, float, float] = IMAGENET_STD_255,
                         memory_pool_stride: int | None = None) -> MetaSegConfig:
    """Our config for an HF Mask2FormerConfig (as the dict of its config.json).

    memory_pool_stride: default 64, or 32 when the image size is not a multiple of 64.
    """
    if hf_config.get("model_type") != "mask2former":
        raise ConversionError(f"not a Mask2Former config: model_type "
                              f"{hf_config.get('model_type')!r}")
    if list(hf_config.get("feature_strides", [4, 8, 16, 32])) != [4, 8, 16, 32] or \
            hf_config.get("common_stride", 4) != 4:
        raise ConversionError("only feature strides 4/8/16/32 with common stride 4 are supported")
    if hf_config.get("activation_function", "relu") != "relu":
        raise ConversionError("only ReLU feed-forward layers are supported")
    backbone_dict = hf_config.get("backbone_config")
    if backbone_dict is None:
        raise ConversionError("config.json has no backbone_config")
    heads = int(hf_config.get("num_attention_heads", 8))
    hidden = int(hf_config.get("hidden_dim", 256))
    num_labels = len(hf_config.get("id2label") or {}) or int(hf_config.get("num_labels", 0))
    if memory_pool_stride is None:
        memory_pool_stride = default_pool_stride(image_size)
    return MetaSegConfig(
        name=name,
        class_names=_class_names(hf_config, num_labels),
        image_size=image_size,
        num_queries=int(hf_config.get("num_queries", 100)),
        hidden_dim=hidden,
        num_decoder_layers=int(hf_config.get("decoder_layers", 10)) - 1,
        memory_frames=memory_frames,
        pixel_mean=pixel_mean,
        pixel_std=pixel_std,
        backbone=_backbone_config(backbone_dict),
        pixel_decoder=PixelDecoderConfig(
            conv_dim=int(hf_config.get("feature_size", 256)),
            mask_dim=int(hf_config.get("mask_feature_size", 256)),
            encoder_layers=int(hf_config.get("encoder_layers", 6)),
            num_heads=heads,
            ffn_dim=int(hf_config.get("encoder_feedforward_dim", 1024)),
            num_points=4),
        decoder=DecoderConfig(num_heads=heads,
                              ffn_dim=int(hf_config.get("dim_feedforward", 2048)),
                              pre_norm=bool(hf_config.get("pre_norm", False)),
                              enforce_input_projection=bool(
                                  hf_config.get("enforce_input_projection", False))),
        memory=MemoryConfig(feature_dim=hidden, pool_stride=memory_pool_stride, num_heads=heads),
    )


def map_hf_resnet(mapper: KeyMapper, source_prefix: str = BACKBONE,
                  target_prefix: str = "backbone.") -> None:
    """Rules for transformers' ResNet (embedder/encoder.stages) -> torchvision names."""
    mapper.rename([
        (source_prefix + r"embedder\.embedder\.convolution\.weight",
         target_prefix + "conv1.weight"),
        (source_prefix + r"embedder\.embedder\.normalization\.(\w+)", target_prefix + r"bn1.\1"),
    ])
    prefix = source_prefix + r"encoder\.stages\.(\d+)\.layers\.(\d+)\."

    def stage_block(match: re.Match[str], suffix: str) -> str:
        return f"{target_prefix}layer{int(match.group(1)) + 1}.{match.group(2)}.{suffix}"

    mapper.each_match(prefix + r"shortcut\.convolution\.weight", lambda m: mapper.put(
        stage_block(m, "downsample.0.weight"), mapper.take(m.group(0))))
    mapper.each_match(prefix + r"shortcut\.normalization\.(\w+)", lambda m: mapper.put(
        stage_block(m, f"downsample.1.{m.group(3)}"), mapper.take(m.group(0))))
    mapper.each_match(prefix + r"layer\.(\d+)\.convolution\.weight", lambda m: mapper.put(
        stage_block(m, f"conv{int(m.group(3)) + 1}.weight"), mapper.take(m.group(0))))
    mapper.each_match(prefix + r"layer\.(\d+)\.normalization\.(\w+)", lambda m: mapper.put(
        stage_block(m, f"bn{int(m.group(3)) + 1}.{m.group(4)}"), mapper.take(m.group(0))))


def _map_swin(mapper: KeyMapper) -> None:
    block = BACKBONE + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
    mapper.rename([
        (BACKBONE + r"embeddings\.patch_embeddings\.projection\.(\w+)",
         r"backbone.patch_embed.proj.\1"),
        (BACKBONE + r"embeddings\.norm\.(\w+)", r"backbone.patch_embed.norm.\1"),
        (block + r"layernorm_before\.(\w+)", r"backbone.layers.\1.blocks.\2.norm1.\3"),
        (block + r"layernorm_after\.(\w+)", r"backbone.layers.\1.blocks.\2.norm2.\3"),
        (block + r"attention\.self\.relative_position_bias_table",
         r"backbone.layers.\1.blocks.\2.attn.relative_position_bias_table"),
        (block + r"attention\.output\.dense\.(\w+)", r"backbone.layers.\1.blocks.\2.attn.proj.\3"),
        (block + r"intermediate\.dense\.(\w+)", r"backbone.layers.\1.blocks.\2.mlp.fc1.\3"),
        (block + r"output\.dense\.(\w+)", r"backbone.layers.\1.blocks.\2.mlp.fc2.\3"),
        (BACKBONE + r"encoder\.layers\.(\d+)\.downsample\.(\w+)\.(\w+)",
         r"backbone.layers.\1.downsample.\2.\3"),
    ])

    def fuse_qkv(match: re.Match[str]) -> None:
        base = match.group(0)[: -len("query." + match.group(3))]
        parts = [mapper.take(f"{base}{name}.{match.group(3)}") for name in ("query", "key",
                                                                            "value")]
        mapper.put(f"backbone.layers.{match.group(1)}.blocks.{match.group(2)}.attn.qkv."
                   f"{match.group(3)}", torch.cat(parts, dim=0))

    mapper.each_match(block + r"attention\.self\.query\.(weight|bias)", fuse_qkv)
    mapper.each_match(BACKBONE + r"hidden_states_norms\.stage(\d+)\.(\w+)", lambda m: mapper.put(
        f"backbone.norm{int(m.group(1)) - 1}.{m.group(2)}", mapper.take(m.group(0))))


def _map_heads(mapper: KeyMapper) -> None:
    layer = TRANSFORMER + r"decoder\.layers\.(\d+)\."
    mapper.rename([
        (PIXEL + r"level_embed", "pixel_decoder.level_embed"),
        (PIXEL + r"input_projections\.(\d)\.(\d)\.(\w+)", r"pixel_decoder.input_proj.\1.\2.\3"),
        (PIXEL + r"encoder\.layers\.(\d+)\.self_attn\.(\w+)\.(\w+)",
         r"pixel_decoder.encoder.\1.self_attn.\2.\3"),
        (PIXEL + r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(\w+)",
         r"pixel_decoder.encoder.\1.norm1.\2"),
        (PIXEL + r"encoder\.layers\.(\d+)\.fc1\.(\w+)", r"pixel_decoder.encoder.\1.linear1.\2"),
        (PIXEL + r"encoder\.layers\.(\d+)\.fc2\.(\w+)", r"pixel_decoder.encoder.\1.linear2.\2"),
        (PIXEL + r"encoder\.layers\.(\d+)\.final_layer_norm\.(\w+)",
         r"pixel_decoder.encoder.\1.norm2.\2"),
        (PIXEL + r"mask_projection\.(\w+)", r"pixel_decoder.mask_features.\1"),
        (PIXEL + r"adapter_1\.(\d)\.(\w+)", r"pixel_decoder.lateral_conv.\1.\2"),
        (PIXEL + r"layer_1\.(\d)\.(\w+)", r"pixel_decoder.output_conv.\1.\2"),
        (TRANSFORMER + r"queries_embedder\.weight", "transformer_decoder.query_embed"),
        (TRANSFORMER + r"queries_features\.weight", "transformer_decoder.query_feat"),
        (TRANSFORMER + r"level_embed\.weight", "transformer_decoder.level_embed"),
        (TRANSFORMER + r"input_projections\.(\d)\.(\w+)", r"transformer_decoder.input_proj.\1.\2"),
        (layer + r"self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(\w+)",
         r"transformer_decoder.layers.\1.self_attn.\2.\3"),
        (layer + r"self_attn_layer_norm\.(\w+)",
         r"transformer_decoder.layers.\1.self_attn_norm.\2"),
        (layer + r"cross_attn\.out_proj\.(\w+)",
         r"transformer_decoder.layers.\1.cross_attn.out_proj.\2"),
        (layer + r"cross_attn_layer_norm\.(\w+)",
         r"transformer_decoder.layers.\1.cross_attn_norm.\2"),
        (layer + r"fc1\.(\w+)", r"transformer_decoder.layers.\1.linear1.\2"),
        (layer + r"fc2\.(\w+)", r"transformer_decoder.layers.\1.linear2.\2"),
        (layer + r"final_layer_norm\.(\w+)", r"transformer_decoder.layers.\1.ffn_norm.\2"),
        (TRANSFORMER + r"decoder\.layernorm\.(\w+)", r"transformer_decoder.decoder_norm.\1"),
        (TRANSFORMER + r"decoder\.mask_predictor\.mask_embedder\.(\d)\.0\.(\w+)",
         r"transformer_decoder.mask_embed.layers.\1.\2"),
        (r"class_predictor\.(\w+)", r"transformer_decoder.class_embed.\1"),
    ])

    def split_cross(match: re.Match[str]) -> None:
        index = match.group(1)
        base = f"model.transformer_module.decoder.layers.{index}.cross_attn."
        weight = mapper.take(base + "in_proj_weight")
        bias_key = base + "in_proj_bias"
        bias = mapper.take(bias_key) if bias_key in mapper.source else None
        for name, (w, b) in zip(("q_proj", "k_proj", "v_proj"), split_in_proj(weight, bias),
                                strict=True):
            target = f"transformer_decoder.layers.{index}.cross_attn.{name}."
            mapper.put(target + "weight", w)
            if b is not None:
                mapper.put(target + "bias", b)

    mapper.each_match(layer + r"cross_attn\.in_proj_weight", split_cross)


def convert_hf_state_dict(state: dict[str, Tensor], config: MetaSegConfig, strict: bool = True
                          ) -> tuple[MetaSegmenter, ConversionReport]:
    """MetaSegmenter (eval mode) with the weights of an HF Mask2Former state dict."""
    mapper = KeyMapper(normalise_hf_keys(state), HF_IGNORED)
    if config.backbone.kind == "resnet":
        map_hf_resnet(mapper)
    elif config.backbone.kind == "swin":
        _map_swin(mapper)
    else:
        raise ConversionError(f"HF Mask2Former has no {config.backbone.kind} backbone")
    _map_heads(mapper)
    return assemble_model(config, mapper, strict=strict)


def load_hf_weights(directory: Path) -> dict[str, Tensor]:
    """Weights of an HF model directory: safetensors (single or sharded) or pytorch_model.bin."""
    directory = Path(directory)
    single = directory / "model.safetensors"
    if single.exists():
        return load_file(str(single))
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_file(str(directory / shard)))
        return state
    binary = directory / "pytorch_model.bin"
    if binary.exists():
        # weights_only: tensors and plain containers only, never arbitrary objects.
        loaded = torch.load(binary, map_location="cpu", weights_only=True)
        return dict(loaded)
    raise ConversionError(f"{directory} holds no model.safetensors, sharded safetensors or "
                          "pytorch_model.bin")


def _preprocessor_stats(directory: Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    path = directory / "preprocessor_config.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if "image_mean" not in data or "image_std" not in data:
        return None
    scale = 255.0 if data.get("do_rescale", True) else 1.0
    mean = tuple(float(v) * scale for v in data["image_mean"])
    std = tuple(float(v) * scale for v in data["image_std"])
    return mean, std


def convert_hf_checkpoint(directory: str | Path, name: str | None = None,
                          image_size: tuple[int, int] = (512, 512), memory_frames: int = 4,
                          strict: bool = True) -> tuple[MetaSegmenter, ConversionReport]:
    """Convert an HF Mask2Former model directory (config.json + weights)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise ConversionError(f"{config_path} not found")
    hf_config = json.loads(config_path.read_text())
    stats = _preprocessor_stats(directory)
    mean, std = stats if stats is not None else (IMAGENET_MEAN_255, IMAGENET_STD_255)
    config = hf_config_to_metaseg(hf_config, name or directory.name, image_size=image_size,
                                  memory_frames=memory_frames, pixel_mean=mean, pixel_std=std)
    model, report = convert_hf_state_dict(load_hf_weights(directory), config, strict=strict)
    report.notes.append(f"source: Hugging Face Mask2Former ({config.backbone.kind}), "
                        f"{config.num_classes} classes, {config.num_decoder_layers} layers")
    return model, report


def random_reference_pair(config: MetaSegConfig) -> tuple[Any, MetaSegmenter]:
    """transformers' Mask2Former with the architecture of `config` and random weights (from
    torch's current seed), in eval mode, and the MetaSegmenter converted from it (the same
    outputs): the pair the benchmarks time against each other."""
    import transformers

    reference = transformers.Mask2FormerForUniversalSegmentation(
        reference_mask2former_config(config)).eval()
    model, _ = convert_hf_state_dict(reference.state_dict(), config)
    return reference, model


def reference_mask2former_config(config: MetaSegConfig):
    """transformers.Mask2FormerConfig with the architecture of our config (ResNet or Swin).

    The reference model built from it (random weights, no download) converts to a
    MetaSegmenter computing the same outputs; used by the fidelity tests and benchmarks.
    """
    import transformers

    stages = ["stage1", "stage2", "stage3", "stage4"]
    backbone = config.backbone
    if backbone.kind == "resnet":
        layouts = {depth: key for key, depth in RESNET_DEPTHS.items()}
        layer_type, depths = layouts[backbone.depth]
        backbone_config = transformers.ResNetConfig(
            depths=list(depths), hidden_sizes=RESNET_WIDTHS[layer_type], layer_type=layer_type,
            out_features=stages)
    elif backbone.kind == "swin":
        backbone_config = transformers.SwinConfig(
            embed_dim=backbone.embed_dim, depths=list(backbone.depths),
            num_heads=list(backbone.num_heads), window_size=backbone.window_size,
            mlp_ratio=backbone.mlp_ratio, patch_size=backbone.patch_size, out_features=stages)
    else:
        raise ConversionError(f"transformers' Mask2Former has no {backbone.kind} backbone")
    if config.pixel_decoder.num_heads != config.decoder.num_heads or \
            config.pixel_decoder.num_points != 4:
        raise ConversionError("the reference uses one head count and 4 points")
    return transformers.Mask2FormerConfig(
        backbone_config=backbone_config, use_pretrained_backbone=False,
        feature_size=config.pixel_decoder.conv_dim, mask_feature_size=config.pixel_decoder.mask_dim,
        hidden_dim=config.hidden_dim, encoder_feedforward_dim=config.pixel_decoder.ffn_dim,
        encoder_layers=config.pixel_decoder.encoder_layers,
        decoder_layers=config.num_decoder_layers + 1, num_attention_heads=config.decoder.num_heads,
        dim_feedforward=config.decoder.ffn_dim, pre_norm=config.decoder.pre_norm,
        enforce_input_projection=config.decoder.enforce_input_projection,
        num_queries=config.num_queries, id2label=dict(enumerate(config.class_names)))
