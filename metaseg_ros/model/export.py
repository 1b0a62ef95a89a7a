"""Exporting the single-frame step (memory in -> memory out) with torch.export and ONNX.

The exported graph takes and returns flat tensors with fixed shapes:

    inputs   images (B, 3, H, W) float32 RGB 0..255, memory_features, memory_queries,
             memory_valid, memory_mask_features
    outputs  class_logits, mask_logits, query_embeddings, next_memory_features,
             next_memory_queries, next_memory_valid, next_memory_mask_features

Normalisation happens inside the graph. The network is written to export without NonZero,
ScatterND, Loop, If or Einsum nodes (find_forbidden_ops checks an ONNX file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import MetaSegmenter, step_input_shapes

INPUT_NAMES = ("images", "memory_features", "memory_queries", "memory_valid",
               "memory_mask_features")
OUTPUT_NAMES = ("class_logits", "mask_logits", "query_embeddings", "next_memory_features",
                "next_memory_queries", "next_memory_valid", "next_memory_mask_features")
FORBIDDEN_ONNX_OPS = ("NonZero", "ScatterND", "Loop", "If", "Einsum")
DEFAULT_OPSET = 18


class StepModule(nn.Module):
    """MetaSegmenter.forward with the memory as four plain tensors in and out."""

    def __init__(self, model: MetaSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, memory_features: Tensor, memory_queries: Tensor,
                memory_valid: Tensor, memory_mask_features: Tensor) -> tuple[Tensor, ...]:
        """One frame; returns the tensors named by OUTPUT_NAMES."""
        out = self.model(images, MemoryState(memory_features, memory_queries, memory_valid,
                                             memory_mask_features))
        return (out.class_logits, out.mask_logits, out.query_embeddings, *out.memory)


def example_inputs(model: MetaSegmenter, batch_size: int = 1) -> tuple[Tensor, ...]:
    """Inputs with the config's image size and an empty memory, on the model's device."""
    images_shape = step_input_shapes(model.config, batch_size)[0]
    images = torch.zeros(images_shape, device=model.pixel_mean.device)
    return (images, *model.initial_memory(batch_size))


def export_program(model: MetaSegmenter, batch_size: int = 1) -> torch.export.ExportedProgram:
    """torch.export of the step with fixed shapes (eval mode)."""
    model.eval()
    return torch.export.export(StepModule(model).eval(), example_inputs(model, batch_size))


def export_onnx(model: MetaSegmenter, path: str | Path, batch_size: int = 1,
                opset: int = DEFAULT_OPSET, metadata: Mapping[str, str] | None = None) -> Path:
    """Write an ONNX model of the step (dynamo exporter, fixed shapes); returns the path.

    metadata: string properties stored in the model (ONNX metadata_props).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    program = torch.onnx.export(StepModule(model).eval(), example_inputs(model, batch_size),
                                dynamo=True, opset_version=opset,
                                input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                external_data=False, verbose=False)
    if metadata:
        program.model.metadata_props.update({str(k): str(v) for k, v in metadata.items()})
    program.save(str(path))
    return path


def onnx_op_types(onnx_model) -> list[str]:
    """Every node op type in an ONNX model, subgraphs and local functions included."""
    found: list[str] = []

    def walk(nodes: Iterable) -> None:
        for node in nodes:
            found.append(node.op_type)
            for attribute in node.attribute:
                if attribute.g is not None and len(attribute.g.node):
                    walk(attribute.g.node)
                for graph in attribute.graphs:
                    walk(graph.node)

    walk(onnx_model.graph.node)
    for function in onnx_model.functions:
        walk(function.node)
    return found


def find_forbidden_ops(onnx_model, forbidden: Iterable[str] = FORBIDDEN_ONNX_OPS) -> list[str]:
    """Sorted forbidden op types present in the ONNX model (empty when clean)."""
    banned = set(forbidden)
    return sorted({op for op in onnx_op_types(onnx_model) if op in banned})
