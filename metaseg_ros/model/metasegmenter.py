"""MetaSegmenter: Mask2Former with a space-time memory bank, one frame per call.

    images (B, 3, H, W) RGB 0..255 -> normalise -> backbone (strides 4..32)
      -> pixel decoder (mask features at stride 4, levels 32/16/8)
      -> transformer decoder (masked cross-attention, gated memory attention, self-attention,
         FFN) -> class logits (B, Q, C+1), mask logits (B, Q, H/4, W/4)
    memory (state in) -> updated memory (state out): this frame written into slot 0.
    With memory.past_mask_features, the mask features are first blended with the last
    frame's (model/mask_memory.py) and kept for the next one.

With every memory gate at 0 (as initialised and after converting an image checkpoint) the
network computes exactly the image Mask2Former.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaseg_ros.model.backbones import build_backbone
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.mask_memory import MaskFeatureCarry
from metaseg_ros.model.memory import MemoryReader, MemoryState, empty_memory, write_frame
from metaseg_ros.model.pixel_decoder import PixelDecoder
from metaseg_ros.model.pixel_memory import PixelMemoryRead
from metaseg_ros.model.transformer_decoder import TransformerDecoder


class NetworkOutput(NamedTuple):
    """class_logits (B, Q, C+1), last index = no-object; mask_logits (B, Q, H/4, W/4);
    query_embeddings (B, Q, D) final normalised queries (for association); memory: the
    updated ring to feed into the next call."""

    class_logits: Tensor
    mask_logits: Tensor
    query_embeddings: Tensor
    memory: MemoryState


def memory_shapes(config: MetaSegConfig, batch_size: int = 1,
                  image_size: tuple[int, int] | None = None) -> MemoryState:
    """The shape of each memory tensor (features, queries, valid, mask_features) for a batch
    of images of `image_size` (default: the config's)."""
    height, width = image_size or config.image_size
    stride = config.memory.pool_stride
    frames = config.memory_frames
    return MemoryState(
        features=(batch_size, frames, config.memory.feature_dim, height // stride,
                  width // stride),
        queries=(batch_size, frames, config.num_queries, config.hidden_dim),
        valid=(batch_size, frames),
        mask_features=(batch_size, *kept_mask_shape(config, (height, width))))


def kept_mask_shape(config: MetaSegConfig, image_size: tuple[int, int] | None = None
                    ) -> tuple[int, int, int]:
    """(mask_dim, H/4, W/4) of the kept mask features (mask_dim + 2 with memory.
    past_mask_motion: their flow); (1, 1, 1) (a placeholder) without
    memory.past_mask_features."""
    if not config.memory.past_mask_features:
        return (1, 1, 1)
    height, width = image_size or config.image_size
    channels = config.pixel_decoder.mask_dim + (2 if config.memory.past_mask_motion else 0)
    return (channels, height // 4, width // 4)


def step_input_shapes(config: MetaSegConfig, batch_size: int = 1) -> tuple[tuple[int, ...], ...]:
    """Shapes of the step's inputs (images, then the memory tensors) at the config's size."""
    return ((batch_size, 3, *config.image_size), *memory_shapes(config, batch_size))


def initial_memory(config: MetaSegConfig, batch_size: int = 1,
                   device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> MemoryState:
    """A memory with every slot empty for the config (valid flags stay float32)."""
    return empty_memory(batch_size, config.memory_frames, config.memory.feature_dim,
                        config.memory_size, config.num_queries, config.hidden_dim,
                        device=device, dtype=dtype, mask_shape=kept_mask_shape(config))


class MetaSegmenter(nn.Module):
    """Video instance segmentation network; state (memory) passed explicitly in and out."""

    def __init__(self, config: MetaSegConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1),
                             persistent=False)
        self.backbone = build_backbone(config.backbone)
        self.pixel_decoder = PixelDecoder(config.pixel_decoder, tuple(self.backbone.channels))
        self.transformer_decoder = TransformerDecoder(config)
        self.memory_write_proj = nn.Conv2d(config.pixel_decoder.conv_dim,
                                           config.memory.feature_dim, 1)
        self.memory_reader = MemoryReader(config.memory_frames, config.memory.feature_dim,
                                          config.hidden_dim)
        memory = config.memory
        self.pixel_memory = PixelMemoryRead(
            config.pixel_decoder.conv_dim, memory.feature_dim, config.memory_frames,
            memory.num_heads, memory.content_gate,
            memory.keep_gate) if memory.pixel_read else None
        self.mask_memory = MaskFeatureCarry(
            config.pixel_decoder.mask_dim,
            memory.past_mask_motion,
            memory.past_mask_frame_context) if memory.past_mask_features else None

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's classes, indexed by class id (no-object excluded)."""
        return self.config.class_names

    def initial_memory(self, batch_size: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> MemoryState:
        """A memory with every slot empty, on the model's device/dtype unless given."""
        return initial_memory(
            self.config, batch_size,
            device=self.pixel_mean.device if device is None else device,
            dtype=self.transformer_decoder.query_feat.dtype if dtype is None else dtype)

    def forward(self, images: Tensor, memory: MemoryState) -> NetworkOutput:
        """Segment one frame per batch entry; images (B, 3, H, W) float RGB in 0..255."""
        return self.forward_with_aux(images, memory)[0]

    def forward_with_aux(self, images: Tensor, memory: MemoryState
                         ) -> tuple[NetworkOutput, list[tuple[Tensor, Tensor]]]:
        """Forward plus (class_logits, mask_logits) before layer 1 and after every layer."""
        self._check_inputs(images, memory)
        pixels = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        features = self.backbone(pixels)
        read = self.pixel_memory
        decoded = self.pixel_decoder(
            features, None if read is None else (lambda level: read(level, memory)))
        mask_features = decoded.mask_features
        kept = None
        if self.mask_memory is not None:
            mask_features, kept = self.mask_memory(mask_features, memory.mask_features,
                                                   memory.valid[:, 0])
        tokens = self.memory_reader(memory, self.transformer_decoder.query_embed)
        out = self.transformer_decoder(decoded.multi_scale, mask_features, tokens)
        new_features = self._memory_features(decoded.multi_scale)
        new_memory = write_frame(memory, new_features, out.query_embeddings, kept)
        final = out.predictions[-1]
        result = NetworkOutput(final.class_logits, final.mask_logits, out.query_embeddings,
                               new_memory)
        return result, [(p.class_logits, p.mask_logits) for p in out.predictions]

    def _memory_features(self, multi_scale: list[Tensor]) -> Tensor:
        """The frame's features to store: the stride-16 level for pool_stride 16, else the
        stride-32 level average-pooled to pool_stride; projected to C_mem channels."""
        stride = self.config.memory.pool_stride
        if stride == 16:
            return self.memory_write_proj(multi_scale[1])
        features = self.memory_write_proj(multi_scale[0])
        pool = stride // 32
        if pool > 1:
            features = F.avg_pool2d(features, kernel_size=pool, stride=pool)
        return features

    def _check_inputs(self, images: Tensor, memory: MemoryState) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        height, width = int(images.shape[2]), int(images.shape[3])
        stride = self.config.memory.pool_stride
        if height % stride or width % stride:
            raise ValueError(f"image size {(height, width)} must be divisible by {stride}")
        expected = memory_shapes(self.config, images.shape[0], (height, width))
        got = MemoryState(*(tuple(t.shape) for t in memory))
        if got != expected:
            raise ValueError(f"memory shapes {tuple(got)} do not match {tuple(expected)}; "
                             "use initial_memory()")
