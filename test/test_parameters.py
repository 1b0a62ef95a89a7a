"""The shipped params file and the node's parameter table agree; specs validate values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")
from metaseg_ros.inference.settings import PipelineSettings
from metaseg_ros.ros.parameters import PARAMETERS, ParamSpec
from metaseg_ros.tracking import TrackerConfig

CONFIG = Path(__file__).resolve().parents[1] / "config" / "metaseg.yaml"


@pytest.mark.torch_free
def test_params_file_lists_every_parameter_with_its_default() -> None:
    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    table = {spec.name: spec.default for spec in PARAMETERS}
    assert set(values) == set(table) - {"segmenter"}
    for name, value in values.items():
        assert value == table[name] and type(value) is type(table[name]), name


@pytest.mark.torch_free
def test_every_tracker_field_is_a_described_parameter() -> None:
    specs = {spec.name: spec for spec in PARAMETERS}
    for field in TrackerConfig.__dataclass_fields__:
        spec = specs[f"tracker.{field}"]
        assert spec.description and spec.description != field
        assert spec.default == getattr(TrackerConfig(), field)
    settings = PipelineSettings.from_parameters({s.name: s.default for s in PARAMETERS})
    assert settings.tracker == TrackerConfig()
    assert settings == PipelineSettings()  # model and post-processing defaults too


@pytest.mark.torch_free
def test_spec_checks_choices_and_ranges() -> None:
    choice = ParamSpec("backend", "eager", "d", choices=("eager", "onnxruntime"))
    assert choice.check("eager") is None
    assert "not one of" in choice.check("magic")
    number = ParamSpec("score_threshold", 0.5, "d", minimum=0.0, maximum=1.0)
    assert number.check(1.0) is None and "outside" in number.check(1.5)
    descriptor = number.descriptor()
    assert descriptor.floating_point_range[0].to_value == 1.0 and descriptor.read_only


@pytest.mark.parametrize("post_set_callbacks", [True, False], ids=["post-set", "humble"])
def test_live_thresholds_are_validated_then_applied(rclpy_context, post_set_callbacks) -> None:
    """Both callback schemes (post-set on Iron and newer; Humble's on-set fallback, selected
    here explicitly) reject a bad value without touching the pipeline and apply a good one."""
    from rclpy.parameter import Parameter

    from metaseg_ros.ros.node import MetaSegNode

    node = MetaSegNode(post_set_callbacks=post_set_callbacks, parameter_overrides=[
        Parameter("backend", value="eager")])
    try:
        segmenter = node.runtime.pipeline[""].segmenter  # the only camera
        assert segmenter.settings.score_threshold == 0.5
        results = node.set_parameters([Parameter("score_threshold", value=1.5)])
        assert not results[0].successful and "score_threshold" in results[0].reason
        assert segmenter.settings.score_threshold == 0.5
        assert node.get_parameter("score_threshold").value == 0.5
        results = node.set_parameters([Parameter("score_threshold", value=0.25),
                                       Parameter("max_instances", value=7)])
        assert all(result.successful for result in results)
        assert (segmenter.settings.score_threshold, segmenter.settings.max_instances) == \
            (0.25, 7)
        results = node.set_parameters([Parameter("backend", value="onnxruntime")])
        assert not results[0].successful  # read-only: needs a restart
    finally:
        node.shutdown()
        node.destroy_node()


@pytest.mark.torch_free
@pytest.mark.parametrize("post_set_callbacks", [True, False], ids=["post-set", "humble"])
def test_a_plugin_without_adjustable_postprocessing_refuses_live_thresholds(
        rclpy_context, post_set_callbacks) -> None:
    """With a segmenter plugin the node needs no torch (the Python 3.10 lane runs this):
    both callback schemes refuse thresholds the plugin cannot take and apply the node's own
    live parameter."""
    from rclpy.parameter import Parameter

    from metaseg_ros.ros.node import MetaSegNode

    node = MetaSegNode(post_set_callbacks=post_set_callbacks, parameter_overrides=[
        Parameter("segmenter", value="color_segmenter:create")])
    try:
        results = node.set_parameters([Parameter("score_threshold", value=0.25)])
        assert not results[0].successful
        assert "no adjustable post-processing" in results[0].reason
        assert node.set_parameters([Parameter("publish_label_image", value=False)])[0].successful
        assert node.runtime.params["publish_label_image"] is False
    finally:
        node.shutdown()
        node.destroy_node()
