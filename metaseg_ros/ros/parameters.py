"""The node's parameters: one table with defaults, descriptions, ranges and choices.

Every parameter is declared with a descriptor (description, range or allowed values,
read-only when it cannot change while running) and validated by one callback, both at
start-up (values from the params file) and on later `ros2 param set`.
"""

from __future__ import annotations

import ast
import inspect
import itertools
from dataclasses import MISSING, dataclass, fields
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from metaseg_ros.tracking.config import EMBEDDING_MATCH_MODES, TrackerConfig


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: default (which fixes its type), description, constraints."""

    name: str
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = True

    def descriptor(self) -> ParameterDescriptor:
        """The rclpy descriptor: description, range, allowed values, read-only flag."""
        descriptor = ParameterDescriptor(name=self.name, description=self.description,
                                         read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.minimum is not None and isinstance(self.default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(self.minimum), to_value=float(self.maximum), step=0.0)]
        elif self.minimum is not None and isinstance(self.default, int):
            descriptor.integer_range = [IntegerRange(
                from_value=int(self.minimum), to_value=int(self.maximum), step=1)]
        return descriptor

    def check(self, value: Any) -> str | None:
        """None when `value` is acceptable, else the reason it is not."""
        if self.choices and value not in self.choices:
            return f"{self.name}='{value}' is not one of: {', '.join(self.choices)}"
        if self.minimum is not None and not self.minimum <= value <= self.maximum:
            return f"{self.name}={value} is outside [{self.minimum}, {self.maximum}]"
        return None


PARAMETERS: tuple[ParamSpec, ...] = (
    # Input
    ParamSpec("input_type", "raw", "Subscribe to sensor_msgs/Image on 'image' (raw) or to "
              "sensor_msgs/CompressedImage (jpeg, png) on 'image/compressed' (compressed)",
              choices=("raw", "compressed")),
    ParamSpec("input_reliability", "best_effort", "QoS reliability of the image subscription "
              "(sensor-data default: best effort)", choices=("best_effort", "reliable")),
    ParamSpec("input_depth", 1, "QoS history depth of the image subscription (keep last N)",
              minimum=1, maximum=100),
    ParamSpec("image_converter", "auto", "Image decoding: cv_bridge when importable (auto), or "
              "the built-in numpy converter", choices=("auto", "numpy", "cv_bridge")),
    # Model
    ParamSpec("model_config", "tiny", "MetaSegmenter architecture when no checkpoint is given",
              choices=("tiny", "r50", "swin-t", "swin-s", "swin-b", "swin-l")),
    ParamSpec("checkpoint", "", "Path of a metaseg checkpoint (.safetensors with its .json) "
              "or of an export made by metaseg-export (.onnx, .pt2, .ep: run on the matching "
              "backend); '' = the weights shipped with the package, random weights if none"),
    ParamSpec("backend", "auto", "Inference backend; auto = onnxruntime on CPU when installed "
              "(exports once into $METASEG_CACHE_DIR), else eager; cudagraph on CUDA (the "
              "eager step replayed as a CUDA graph)",
              choices=("auto", "eager", "cudagraph", "onnxruntime", "tensorrt", "exported")),
    ParamSpec("device", "cpu", "Torch device of the eager, cudagraph, exported and tensorrt "
              "backends",
              choices=("cpu", "cuda")),
    ParamSpec("precision", "float32", "Arithmetic of the eager and cudagraph backends: "
              "float16/bfloat16 run the network under autocast (GPU tensor cores; see "
              "docs/benchmarks.md)",
              choices=("float32", "float16", "bfloat16")),
    ParamSpec("num_threads", 0, "CPU threads for inference (0 = library default)",
              minimum=0, maximum=256),
    ParamSpec("segmenter", "", "Advanced: 'module:factory' returning an object with the "
              "Segmenter interface (metaseg_ros.results.Segmenter) instead of MetaSegmenter"),
    # Post-processing (may change while running)
    ParamSpec("score_threshold", 0.5, "Minimum instance score (class prob x mask quality)",
              minimum=0.0, maximum=1.0, read_only=False),
    ParamSpec("mask_threshold", 0.5, "Probability above which a pixel belongs to a mask",
              minimum=0.01, maximum=0.99, read_only=False),
    ParamSpec("max_instances", 20, "At most this many instances per frame (highest scores)",
              minimum=1, maximum=200, read_only=False),
    ParamSpec("resolve_overlaps", True, "Give each pixel to at most one instance (the most "
              "confident)", read_only=False),
    ParamSpec("min_kept_fraction", 0.5, "With resolve_overlaps: drop an instance left with "
              "less than this fraction of its own mask (duplicates of a more confident one)",
              minimum=0.0, maximum=1.0, read_only=False),
    # Outputs
    ParamSpec("output_reliability", "reliable", "QoS reliability of the published topics",
              choices=("best_effort", "reliable")),
    ParamSpec("output_depth", 5, "QoS history depth of the published topics",
              minimum=1, maximum=100),
    ParamSpec("publish_label_image", True, "Publish 'instance_labels' (32SC1 track ids) while "
              "it has subscribers", read_only=False),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics reports",
              minimum=0.1, maximum=60.0),
)


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """The docstrings written under the fields of a dataclass, by field name."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for statement, following in itertools.pairwise(body):
        if (isinstance(statement, ast.AnnAssign) and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


# Ranges of the tracker's integer fields; its float fields are fractions in [0, 1].
_TRACKER_INT_RANGES = {"max_lost": (0, 100_000), "confirm_hits": (1, 1000),
                       "embedding_bank_size": (1, 1000)}


def _tracker_parameters() -> tuple[ParamSpec, ...]:
    """One `tracker.<field>` parameter per TrackerConfig field (its doc, default, range)."""
    docs = _attribute_docstrings(TrackerConfig)
    specs = []
    for spec in fields(TrackerConfig):
        default = spec.default if spec.default is not MISSING else spec.default_factory()
        name, description = f"tracker.{spec.name}", docs.get(spec.name, spec.name)
        if isinstance(default, str):
            specs.append(ParamSpec(name, default, description, choices=EMBEDDING_MATCH_MODES))
        elif isinstance(default, int):
            low, high = _TRACKER_INT_RANGES[spec.name]
            specs.append(ParamSpec(name, default, description, minimum=low, maximum=high))
        else:
            specs.append(ParamSpec(name, float(default), description, minimum=0.0, maximum=1.0))
    return tuple(specs)


PARAMETERS = PARAMETERS + _tracker_parameters()
_BY_NAME = {spec.name: spec for spec in PARAMETERS}


def declare_parameters(node: Node) -> None:
    """Declare every parameter, validating the params-file values through `validate`."""
    node.add_on_set_parameters_callback(validate)
    for spec in PARAMETERS:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())


def validate(parameters: list[Parameter]) -> SetParametersResult:
    """set-parameters callback: reject values outside the allowed choices/ranges."""
    for parameter in parameters:
        spec = _BY_NAME.get(parameter.name)
        if spec is None:
            continue
        reason = spec.check(parameter.value)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
    return SetParametersResult(successful=True)


def read_parameters(node: Node) -> dict[str, Any]:
    """Current values of all declared parameters, by name."""
    return {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
