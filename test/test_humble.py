"""The fallbacks for Humble's rclpy (3.3), each selected explicitly here on a newer rclpy
(docs/humble.md lists every rclpy API the package uses and where Humble lacks one).

The post-set parameter callback fallback is tested in test_parameters.py (ids 'humble')."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("rclpy")
from metaseg_ros.ros.launch_command import (
    LEGACY_PROFILE_VARIABLE,
    PROFILE_VARIABLE,
    LaunchArguments,
    node_environment,
    profile_variables,
)
from metaseg_ros.ros.runtime import EVENT_MODULES, event_callbacks_type

pytestmark = pytest.mark.torch_free
PLUGIN = "color_segmenter:create"


def message_lost_handlers(subscription) -> list:
    """The subscription's event handlers for the middleware's message-lost event."""
    return [handler for handler in subscription.event_handlers
            if "MESSAGE_LOST" in str(handler.event_type)]


@pytest.mark.parametrize("modules", [EVENT_MODULES, ("rclpy.qos_event",)],
                         ids=["default", "humble"])
def test_lifecycle_node_subscribes_with_the_message_lost_event(rclpy_context, modules) -> None:
    """Humble keeps SubscriptionEventCallbacks in rclpy.qos_event (Iron moved it to
    rclpy.event_handler and left qos_event as a deprecated alias): with either, the managed
    node goes through configure and activate (trigger_* as the autostart path calls them)
    and its image subscription carries the message-lost handler that feeds
    frames_lost_in_transport."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from metaseg_ros.ros.lifecycle_node import MetaSegLifecycleNode

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "importing 'qos_event' is deprecated" on Iron+
        callbacks = event_callbacks_type(modules)
    node = MetaSegLifecycleNode(parameter_overrides=[Parameter("segmenter", value=PLUGIN)])
    try:
        node.runtime.event_callbacks_type = callbacks
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        camera = node.runtime.cameras[""]  # the only camera (no `cameras` parameter)
        assert node.runtime.pipeline is not None and camera.subscription is None
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        subscription = camera.subscription
        assert subscription is not None and len(message_lost_handlers(subscription)) == 1
        camera.on_message_lost(type("Info", (), {"total_count_change": 3})())
        assert camera.stats.lost_in_transport == 3
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert camera.subscription is None
    finally:
        node.shutdown()
        node.destroy_node()


def test_event_callbacks_type_names_what_is_missing() -> None:
    with pytest.raises(ImportError, match=r"rclpy\.no_such_module"):
        event_callbacks_type(("rclpy.no_such_module",))


def test_humble_reads_the_legacy_fast_dds_profile_variable() -> None:
    """Fast DDS 2.6 (Humble) reads FASTRTPS_DEFAULT_PROFILES_FILE: the launch file and the
    tests (conftest.py) set it there besides the new name."""
    assert profile_variables("humble") == (PROFILE_VARIABLE, LEGACY_PROFILE_VARIABLE)
    assert profile_variables("kilted") == (PROFILE_VARIABLE,)
    env = node_environment(LaunchArguments(fastdds_profile="/p.xml"), {"ROS_DISTRO": "humble"})
    assert env[LEGACY_PROFILE_VARIABLE] == env[PROFILE_VARIABLE] == "/p.xml"
