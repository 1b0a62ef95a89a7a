"""Detectron2-format Mask2Former checkpoints (.pkl, facebookresearch/Mask2Former model zoo).

Image models (MaskFormer meta-architecture, MultiScaleMaskedTransformerDecoder) and video
models (VideoMaskFormer, VideoMultiScaleMaskedTransformerDecoder: same parameter names) with
ResNet or Swin backbones. The architecture is read off the weights' names and shapes; what
shapes cannot tell (attention heads, the class names, whether it is a video model) comes
from the caller, with Mask2Former's defaults.

Pickles are read with a restricted unpickler (numpy arrays and plain containers only).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
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
from metaseg_ros.model.convert.safe_pickle import load_detectron2_pickle
from metaseg_ros.model.metasegmenter import MetaSegmenter

D2_IGNORED = [r"^criterion\.", r"num_batches_tracked$", r"relative_position_index$",
              r"^pixel_(mean|std)$"]
PIXEL = r"sem_seg_head\.pixel_decoder\."
PREDICTOR = r"sem_seg_head\.predictor\."
RESNET_BLOCKS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}


def _count(keys: list[str], pattern: str) -> int:
    compiled = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := compiled.match(k))})


def infer_detectron2_config(weights: dict[str, Tensor], name: str,
                            class_names: tuple[str, ...] | None = None,
                            num_heads: int = 8, video: bool = False,
                            image_size: tuple[int, int] = (512, 512),
                            memory_frames: int = 4, memory_pool_stride: int = 64
                            ) -> MetaSegConfig:
    """Our config for a Detectron2 Mask2Former state dict (names and shapes)."""
    keys = list(weights)
    if "backbone.stem.conv1.weight" in weights:
        blocks = tuple(_count(keys, rf"backbone\.res{stage}\.(\d+)\.") for stage in range(2, 6))
        if blocks not in RESNET_BLOCKS:
            raise ConversionError(f"unsupported ResNet block counts {blocks}")
        if weights["backbone.res2.0.conv1.weight"].shape[0] != 64:
            raise ConversionError("only standard-width ResNets are supported")
        if weights["backbone.res3.0.conv1.weight"].shape[-1] != 1 or \
                weights["backbone.res3.0.conv2.weight"].shape[-1] != 3:
            raise ConversionError("unexpected ResNet bottleneck layout")
        backbone = BackboneConfig(kind="resnet", depth=RESNET_BLOCKS[blocks])
    elif "backbone.patch_embed.proj.weight" in weights:
        if "backbone.absolute_pos_embed" in weights:
            raise ConversionError("Swin with absolute position embedding is not supported")
        projection = weights["backbone.patch_embed.proj.weight"]
        depths = tuple(_count(keys, rf"backbone\.layers\.{i}\.blocks\.(\d+)\.")
                       for i in range(4))
        heads = tuple(int(weights[f"backbone.layers.{i}.blocks.0.attn."
                                  "relative_position_bias_table"].shape[1]) for i in range(4))
        table = weights["backbone.layers.0.blocks.0.attn.relative_position_bias_table"]
        window = (round(table.shape[0] ** 0.5) + 1) // 2
        hidden = weights["backbone.layers.0.blocks.0.mlp.fc1.weight"].shape[0]
        backbone = BackboneConfig(kind="swin", embed_dim=int(projection.shape[0]), depths=depths,
                                  num_heads=heads, window_size=window,
                                  mlp_ratio=hidden / projection.shape[0],
                                  patch_size=int(projection.shape[-1]))
    else:
        raise ConversionError("unknown backbone: neither backbone.stem (ResNet) nor "
                              "backbone.patch_embed (Swin) found")
    query_feat = weights["sem_seg_head.predictor.query_feat.weight"]
    hidden_dim = int(query_feat.shape[1])
    num_classes = int(weights["sem_seg_head.predictor.class_embed.weight"].shape[0]) - 1
    if class_names is None:
        class_names = tuple(f"class_{i}" for i in range(num_classes))
    if len(class_names) != num_classes:
        raise ConversionError(f"the checkpoint has {num_classes} classes, "
                              f"{len(class_names)} names were given")
    conv_dim = int(weights["sem_seg_head.pixel_decoder.mask_features.weight"].shape[1])
    return MetaSegConfig(
        name=name, class_names=tuple(class_names), image_size=image_size,
        num_queries=int(query_feat.shape[0]), hidden_dim=hidden_dim,
        num_decoder_layers=_count(keys, PREDICTOR + r"transformer_ffn_layers\.(\d+)\."),
        memory_frames=memory_frames,
        pixel_mean=IMAGENET_MEAN_255, pixel_std=IMAGENET_STD_255,
        backbone=backbone,
        pixel_decoder=PixelDecoderConfig(
            conv_dim=conv_dim,
            mask_dim=int(weights["sem_seg_head.pixel_decoder.mask_features.weight"].shape[0]),
            encoder_layers=_count(keys, PIXEL + r"transformer\.encoder\.layers\.(\d+)\."),
            num_heads=num_heads,
            ffn_dim=int(weights["sem_seg_head.pixel_decoder.transformer.encoder.layers.0."
                                "linear1.weight"].shape[0]),
            num_points=int(weights["sem_seg_head.pixel_decoder.transformer.encoder.layers.0."
                                   "self_attn.attention_weights.weight"].shape[0]
                           // (num_heads * 3))),
        decoder=DecoderConfig(
            num_heads=num_heads,
            ffn_dim=int(weights["sem_seg_head.predictor.transformer_ffn_layers.0.linear1."
                                "weight"].shape[0]),
            pre_norm=False,
            enforce_input_projection="sem_seg_head.predictor.input_proj.0.weight" in weights
            and conv_dim == hidden_dim,
            video_pos_embedding=video),
        memory=MemoryConfig(feature_dim=hidden_dim, pool_stride=memory_pool_stride,
                            num_heads=num_heads),
    )


def _map_backbone(mapper: KeyMapper, kind: str) -> None:
    if kind == "resnet":
        rules = [(r"backbone\.stem\.conv1\.weight", "backbone.conv1.weight"),
                 (r"backbone\.stem\.conv1\.norm\.(\w+)", r"backbone.bn1.\1")]
        # Detectron2 names the stages res2..res5, torchvision layer1..layer4.
        for stage in range(2, 6):
            source, target = rf"backbone\.res{stage}\.(\d+)\.", f"backbone.layer{stage - 1}.\\1."
            rules += [(source + r"conv(\d)\.weight", target + r"conv\2.weight"),
                      (source + r"conv(\d)\.norm\.(\w+)", target + r"bn\2.\3"),
                      (source + r"shortcut\.weight", target + "downsample.0.weight"),
                      (source + r"shortcut\.norm\.(\w+)", target + r"downsample.1.\2")]
        mapper.rename(rules)
    else:
        mapper.rename([(r"backbone\.(patch_embed|layers|norm\d)\.(.+)", r"backbone.\1.\2")])


def _map_heads(mapper: KeyMapper) -> None:
    mapper.rename([
        (PIXEL + r"input_proj\.(\d)\.(\d)\.(\w+)", r"pixel_decoder.input_proj.\1.\2.\3"),
        (PIXEL + r"transformer\.level_embed", "pixel_decoder.level_embed"),
        (PIXEL + r"transformer\.encoder\.layers\.(\d+)\.(self_attn\.\w+|norm1|linear1|linear2|"
         r"norm2)\.(\w+)", r"pixel_decoder.encoder.\1.\2.\3"),
        (PIXEL + r"mask_features\.(\w+)", r"pixel_decoder.mask_features.\1"),
        (PIXEL + r"adapter_1\.weight", "pixel_decoder.lateral_conv.0.weight"),
        (PIXEL + r"adapter_1\.norm\.(\w+)", r"pixel_decoder.lateral_conv.1.\1"),
        (PIXEL + r"layer_1\.weight", "pixel_decoder.output_conv.0.weight"),
        (PIXEL + r"layer_1\.norm\.(\w+)", r"pixel_decoder.output_conv.1.\1"),
        (PREDICTOR + r"query_feat\.weight", "transformer_decoder.query_feat"),
        (PREDICTOR + r"query_embed\.weight", "transformer_decoder.query_embed"),
        (PREDICTOR + r"level_embed\.weight", "transformer_decoder.level_embed"),
        (PREDICTOR + r"input_proj\.(\d)\.(\w+)", r"transformer_decoder.input_proj.\1.\2"),
        (PREDICTOR + r"transformer_self_attention_layers\.(\d+)\.self_attn\.out_proj\.(\w+)",
         r"transformer_decoder.layers.\1.self_attn.out_proj.\2"),
        (PREDICTOR + r"transformer_self_attention_layers\.(\d+)\.norm\.(\w+)",
         r"transformer_decoder.layers.\1.self_attn_norm.\2"),
        (PREDICTOR + r"transformer_cross_attention_layers\.(\d+)\.multihead_attn\.out_proj\."
         r"(\w+)", r"transformer_decoder.layers.\1.cross_attn.out_proj.\2"),
        (PREDICTOR + r"transformer_cross_attention_layers\.(\d+)\.norm\.(\w+)",
         r"transformer_decoder.layers.\1.cross_attn_norm.\2"),
        (PREDICTOR + r"transformer_ffn_layers\.(\d+)\.(linear1|linear2)\.(\w+)",
         r"transformer_decoder.layers.\1.\2.\3"),
        (PREDICTOR + r"transformer_ffn_layers\.(\d+)\.norm\.(\w+)",
         r"transformer_decoder.layers.\1.ffn_norm.\2"),
        (PREDICTOR + r"decoder_norm\.(\w+)", r"transformer_decoder.decoder_norm.\1"),
        (PREDICTOR + r"class_embed\.(\w+)", r"transformer_decoder.class_embed.\1"),
        (PREDICTOR + r"mask_embed\.layers\.(\d)\.(\w+)",
         r"transformer_decoder.mask_embed.layers.\1.\2"),
    ])

    def split(kind: str, module: str, target: str):
        def handler(match: re.Match[str]) -> None:
            index = match.group(1)
            base = f"sem_seg_head.predictor.{kind}.{index}.{module}."
            weight = mapper.take(base + "in_proj_weight")
            bias = mapper.take(base + "in_proj_bias") if base + "in_proj_bias" in mapper.source \
                else None
            for name, (w, b) in zip(("q_proj", "k_proj", "v_proj"), split_in_proj(weight, bias),
                                    strict=True):
                mapper.put(f"transformer_decoder.layers.{index}.{target}.{name}.weight", w)
                if b is not None:
                    mapper.put(f"transformer_decoder.layers.{index}.{target}.{name}.bias", b)
        return handler

    mapper.each_match(PREDICTOR + r"transformer_self_attention_layers\.(\d+)\.self_attn\."
                      r"in_proj_weight", split("transformer_self_attention_layers", "self_attn",
                                               "self_attn"))
    mapper.each_match(PREDICTOR + r"transformer_cross_attention_layers\.(\d+)\.multihead_attn\."
                      r"in_proj_weight", split("transformer_cross_attention_layers",
                                               "multihead_attn", "cross_attn"))


def convert_detectron2_state_dict(weights: dict[str, Tensor], config: MetaSegConfig,
                                  strict: bool = True
                                  ) -> tuple[MetaSegmenter, ConversionReport]:
    """MetaSegmenter (eval mode) with the weights of a Detectron2 Mask2Former state dict."""
    mapper = KeyMapper(weights, D2_IGNORED)
    _map_backbone(mapper, config.backbone.kind)
    _map_heads(mapper)
    return assemble_model(config, mapper, strict=strict)


def convert_detectron2_checkpoint(path: str | Path, name: str | None = None,
                                  class_names: tuple[str, ...] | None = None,
                                  num_heads: int = 8, video: bool = False,
                                  image_size: tuple[int, int] = (512, 512),
                                  memory_frames: int = 4, strict: bool = True
                                  ) -> tuple[MetaSegmenter, ConversionReport]:
    """Convert a Detectron2 Mask2Former .pkl (restricted unpickling) to MetaSegmenter."""
    path = Path(path)
    arrays = load_detectron2_pickle(path)
    weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    pool = 64 if image_size[0] % 64 == 0 and image_size[1] % 64 == 0 else 32
    config = infer_detectron2_config(weights, name or path.stem, class_names=class_names,
                                     num_heads=num_heads, video=video, image_size=image_size,
                                     memory_frames=memory_frames, memory_pool_stride=pool)
    model, report = convert_detectron2_state_dict(weights, config, strict=strict)
    report.notes.append(f"source: Detectron2 {'Video ' if video else ''}Mask2Former "
                        f"({config.backbone.kind}), {config.num_classes} classes, "
                        f"{config.num_decoder_layers} layers, {num_heads} heads (not stored "
                        "in the checkpoint: pass the model's value if it is not 8)")
    return model, report
