"""The shipped params file and the node's parameter table agree; specs validate values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")
from metaseg_ros.inference.factory import PipelineSettings
from metaseg_ros.ros.parameters import PARAMETERS, ParamSpec
from metaseg_ros.tracking import TrackerConfig

CONFIG = Path(__file__).resolve().parents[1] / "config" / "metaseg.yaml"


def test_params_file_lists_every_parameter_with_its_default() -> None:
    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    table = {spec.name: spec.default for spec in PARAMETERS}
    assert set(values) == set(table) - {"segmenter"}
    for name, value in values.items():
        assert value == table[name] and type(value) is type(table[name]), name


def test_every_tracker_field_is_a_described_parameter() -> None:
    specs = {spec.name: spec for spec in PARAMETERS}
    for field in TrackerConfig.__dataclass_fields__:
        spec = specs[f"tracker.{field}"]
        assert spec.description and spec.description != field
        assert spec.default == getattr(TrackerConfig(), field)
    settings = PipelineSettings.from_parameters({s.name: s.default for s in PARAMETERS})
    assert TrackerConfig(**settings.tracker) == TrackerConfig()


def test_spec_checks_choices_and_ranges() -> None:
    choice = ParamSpec("backend", "eager", "d", choices=("eager", "onnxruntime"))
    assert choice.check("eager") is None
    assert "not one of" in choice.check("magic")
    number = ParamSpec("score_threshold", 0.5, "d", minimum=0.0, maximum=1.0)
    assert number.check(1.0) is None and "outside" in number.check(1.5)
    descriptor = number.descriptor()
    assert descriptor.floating_point_range[0].to_value == 1.0 and descriptor.read_only
