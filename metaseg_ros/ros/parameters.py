"""The node's parameters: one table with defaults, descriptions, ranges and choices.

Model, post-processing and tracker parameters are generated from the settings dataclasses
(`ModelSettings`, `PostprocessSettings`, `TrackerConfig`, where each field is declared once);
only the node's own input/output parameters are written here. Every parameter is declared
with a descriptor (description, range or allowed values, read-only unless the pipeline can
apply it live) and validated by one callback, both at start-up (values from the params
file) and on later `ros2 param set`.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from metaseg_ros.geometry import DEPTH_PREFIX, DepthSettings
from metaseg_ros.inference.settings import (
    TRACKER_PREFIX,
    ModelSettings,
    PostprocessSettings,
)
from metaseg_ros.inference.stream import STREAM_PREFIX, StreamSettings
from metaseg_ros.settings import SettingSpec, setting_specs
from metaseg_ros.tracking.config import TrackerConfig
from metaseg_ros.visualization import LABEL_ENCODINGS


class ParamSpec(SettingSpec):
    """A node parameter: a setting and the rclpy descriptor it declares."""

    @classmethod
    def of(cls, spec: SettingSpec) -> ParamSpec:
        """The parameter for a setting of a settings dataclass."""
        return cls(**asdict(spec))

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


class NameListParam(ParamSpec):
    """A string-array parameter of distinct ROS names (declared by type: no default)."""

    def check(self, value: Any) -> str | None:
        """None for a list of distinct names like 'front' or 'left_wrist' (or None: not
        given), else the reason."""
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return f"{self.name} must be a list of names, got {value!r}"
        bad = [v for v in value if not NAME.fullmatch(v)]
        if bad:
            return (f"{self.name}: {', '.join(repr(v) for v in bad)} is not a topic name "
                    "component (a letter, then letters, digits, '_')")
        if len(set(value)) != len(value):
            return f"{self.name} lists a name twice: {list(value)}"
        return None

    def descriptor(self) -> ParameterDescriptor:
        """The descriptor, typed as a string array."""
        descriptor = super().descriptor()
        descriptor.type = ParameterType.PARAMETER_STRING_ARRAY
        return descriptor


NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
INPUT_PARAMETERS: tuple[ParamSpec, ...] = (
    NameListParam("cameras", [], "Cameras served by this node with one model: topics "
                  "'<camera>/image', '<camera>/instances', ... ([] = one camera on 'image', "
                  "'instances', ...)"),
    ParamSpec("camera_batching", True, "Run frames of several cameras that are waiting "
              "together as one batch through the network (eager backend; exported backends "
              "run them one after the other)"),
    ParamSpec("camera_track_ids", "unique", "Track ids with several cameras: 'unique' (one "
              "counter: an id never names objects of two cameras) or 'per_camera' (each "
              "camera counts on its own: the same id may appear on two cameras' topics)",
              choices=("unique", "per_camera")),
    ParamSpec("camera_batch_window", 0.01, "Seconds the processing thread waits, after a "
              "camera's frame, for the frames of the other cameras that are sending, to run "
              "them as one batch", minimum=0.0, maximum=1.0),
    ParamSpec("input_type", "raw", "Subscribe to sensor_msgs/Image on 'image' (raw) or to "
              "sensor_msgs/CompressedImage (jpeg, png) on 'image/compressed' (compressed)",
              choices=("raw", "compressed")),
    ParamSpec("input_reliability", "best_effort", "QoS reliability of the image subscription "
              "(sensor-data default: best effort)", choices=("best_effort", "reliable")),
    ParamSpec("input_depth", 1, "QoS history depth of the image subscription (keep last N)",
              minimum=1, maximum=100),
    ParamSpec("image_converter", "auto", "Image decoding: cv_bridge when importable (auto), or "
              "the built-in numpy converter", choices=("auto", "numpy", "cv_bridge")),
)
OUTPUT_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("output_reliability", "reliable", "QoS reliability of the published topics",
              choices=("best_effort", "reliable")),
    ParamSpec("output_depth", 5, "QoS history depth of the published topics",
              minimum=1, maximum=100),
    ParamSpec("publish_label_image", True, "Publish 'instance_labels' (track ids) while "
              "it has subscribers", read_only=False),
    ParamSpec("label_encoding", "16UC1", "Encoding of 'instance_labels': 16UC1 (track ids "
              "folded into 1..65535: (id - 1) mod 65535 + 1; shown by Foxglove and RViz) or "
              "32SC1", choices=LABEL_ENCODINGS),
    ParamSpec("marker_lifetime", 1.0, "Lifetime (s) of the 3-D markers on 'markers' and of "
              "the outlines on 'image_markers'", minimum=0.05, maximum=60.0),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics reports",
              minimum=0.1, maximum=60.0),
    ParamSpec("autostart", False, "metaseg_lifecycle_node only: configure and activate at "
              "start (the plain metaseg_node always starts active)"),
)
POSTPROCESS_PARAMETERS: tuple[ParamSpec, ...] = tuple(
    ParamSpec.of(spec) for spec in setting_specs(PostprocessSettings))
PARAMETERS: tuple[ParamSpec, ...] = (
    INPUT_PARAMETERS
    + tuple(ParamSpec.of(spec) for spec in setting_specs(ModelSettings))
    + POSTPROCESS_PARAMETERS
    + OUTPUT_PARAMETERS
    + tuple(ParamSpec.of(spec) for spec in setting_specs(StreamSettings, STREAM_PREFIX))
    + tuple(ParamSpec.of(spec) for spec in setting_specs(DepthSettings, DEPTH_PREFIX))
    + tuple(ParamSpec.of(spec) for spec in setting_specs(TrackerConfig, TRACKER_PREFIX)))
_BY_NAME = {spec.name: spec for spec in PARAMETERS}


def declare_parameters(node: Node) -> None:
    """Declare every parameter, validating the params-file values through `validate`."""
    node.add_on_set_parameters_callback(validate)
    for spec in PARAMETERS:
        # A string array is declared by its type (rclpy types an empty default as bytes).
        default = Parameter.Type.STRING_ARRAY if isinstance(spec.default, list) else \
            spec.default
        node.declare_parameter(spec.name, default, spec.descriptor())


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
    values = {}
    for spec in PARAMETERS:
        try:
            values[spec.name] = node.get_parameter(spec.name).value
        except ParameterUninitializedException:  # a string array not given
            values[spec.name] = list(spec.default)
    return values
