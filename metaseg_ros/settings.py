"""One definition per setting: its default, description and range or choices.

The settings dataclasses (`ModelSettings`, `PostprocessSettings` in inference/settings.py,
`TrackerConfig` in tracking/config.py) declare each field with `setting(...)`. The same
metadata validates the dataclass (`check_settings`), declares the node's ROS parameters
(ros/parameters.py) and gives the command lines their choices, so a default or a range is
written once. This module imports neither torch nor rclpy: reading the table stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields
from typing import Any

# The choices the code accepts, used by the settings below and by the backends themselves.
MODEL_CONFIGS: tuple[str, ...] = ("tiny", "r50", "swin-t", "swin-s", "swin-b", "swin-l")
BACKENDS: tuple[str, ...] = ("eager", "cudagraph", "compiled", "onnxruntime", "exported",
                             "tensorrt", "tensorrt_engine")
BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)
DEVICES: tuple[str, ...] = ("cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("float32", "float16", "bfloat16", "int8")

_METADATA_KEY = "metaseg_setting"


@dataclass(frozen=True)
class SettingSpec:
    """One setting: default (which fixes its type), description, range or choices.

    read_only: whether it can change while the node runs (False only for settings that the
    pipeline applies live, such as the post-processing thresholds).
    """

    name: str
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = True

    def check(self, value: Any) -> str | None:
        """None when `value` is acceptable, else the reason it is not."""
        return self.type_problem(value) or self.range_problem(value)

    def type_problem(self, value: Any) -> str | None:
        """The reason `value` has the wrong type for this setting, or None."""
        expected = type(self.default)
        if expected is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{self.name} must be a number, got {value!r}"
        elif expected is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return f"{self.name} must be an integer, got {value!r}"
        elif not isinstance(value, expected):
            return f"{self.name} must be a {expected.__name__}, got {value!r}"
        return None

    def range_problem(self, value: Any) -> str | None:
        """The reason a value of the right type is outside the range or choices, or None."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.name} must be finite, got {value!r}"
        if self.choices and value not in self.choices:
            return f"{self.name}='{value}' is not one of: {', '.join(self.choices)}"
        if self.minimum is not None and not self.minimum <= value <= self.maximum:
            return f"{self.name}={value} is outside [{self.minimum}, {self.maximum}]"
        return None


def setting(default: Any, description: str, *, minimum: float | None = None,
            maximum: float | None = None, choices: tuple[str, ...] = (),
            live: bool = False) -> Any:
    """A dataclass field carrying its description and range or choices.

    live: the running pipeline can apply a new value (the node's parameter is writable).
    """
    if (minimum is None) != (maximum is None):
        raise ValueError("give both minimum and maximum, or neither")
    return field(default=default, metadata={_METADATA_KEY: (
        " ".join(description.split()), minimum, maximum, tuple(choices), live)})


def setting_specs(cls: type, prefix: str = "") -> tuple[SettingSpec, ...]:
    """The specs of every `setting(...)` field of a settings dataclass, names prefixed."""
    specs = []
    for spec in fields(cls):
        description, minimum, maximum, choices, live = _metadata(spec)
        specs.append(SettingSpec(prefix + spec.name, spec.default, description, minimum,
                                 maximum, choices, read_only=not live))
    return tuple(specs)


def check_settings(instance: Any) -> None:
    """Validate every field of a settings dataclass; float fields given as int become float.

    Raises TypeError for a value of the wrong type and ValueError for one outside the range
    or choices, naming the class, the field and what is accepted.
    """
    for spec in setting_specs(type(instance)):
        value = getattr(instance, spec.name)
        problem = spec.type_problem(value)
        if problem is not None:
            raise TypeError(f"{type(instance).__name__}.{problem}")
        problem = spec.range_problem(value)
        if problem is not None:
            raise ValueError(f"{type(instance).__name__}.{problem}")
        if isinstance(spec.default, float) and isinstance(value, int):
            object.__setattr__(instance, spec.name, float(value))


def _metadata(spec: Field) -> tuple[str, float | None, float | None, tuple[str, ...], bool]:
    try:
        return spec.metadata[_METADATA_KEY]
    except KeyError:
        raise TypeError(f"field {spec.name} is not declared with setting()") from None
