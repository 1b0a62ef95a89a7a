"""metaseg_node: camera images in, tracked instance masks out (ros/runtime.py does the work).

The plain node loads its model and starts listening when it is created; the managed
variant, metaseg_lifecycle_node (ros/lifecycle_node.py), does the same in lifecycle
transitions. Live parameter changes (post-processing thresholds, the label image) are
validated in the on-set callback and applied in a post-set callback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter

from metaseg_ros.errors import ArtifactError, BackendUnavailableError, CheckpointError
from metaseg_ros.inference.settings import PipelineSettings
from metaseg_ros.ros.parameters import (
    POSTPROCESS_PARAMETERS,
    declare_parameters,
    read_parameters,
    validate,
)
from metaseg_ros.ros.runtime import MetaSegRuntime

NODE_NAME = "metaseg_node"
# Parameters the running pipeline applies without a restart (besides publish_label_image).
LIVE_POSTPROCESS = frozenset(spec.name for spec in POSTPROCESS_PARAMETERS)
# What a wrong configuration raises at start-up: reported in one line, exit code 2.
CONFIGURATION_ERRORS = (ParameterException, ValueError, CheckpointError, ArtifactError,
                        BackendUnavailableError, FileNotFoundError)


class LiveParameters:
    """Validate-then-apply handling of parameter changes for a node and its runtime."""

    def __init__(self, node: Node, runtime: MetaSegRuntime,
                 post_set_callbacks: bool | None = None) -> None:
        """post_set_callbacks: apply in a post-set callback (rclpy on Iron and newer); False
        selects the fallback for Humble's rclpy, which has none: changes are applied from
        the on-set callback once they are validated. None: detect."""
        self.runtime = runtime
        if post_set_callbacks is None:
            post_set_callbacks = hasattr(node, "add_post_set_parameters_callback")
        if post_set_callbacks:
            node.add_on_set_parameters_callback(self.validate)
            node.add_post_set_parameters_callback(self.apply)
        else:
            node.add_on_set_parameters_callback(self.validate_and_apply)

    def validate(self, parameters: list[Parameter]) -> SetParametersResult:
        """On-set callback: whether the pipeline can take these values (no side effects);
        ranges and choices are checked by parameters.validate."""
        pipeline = self.runtime.pipeline
        if pipeline is not None and not pipeline.adjustable_postprocess and any(
                param.name in LIVE_POSTPROCESS for param in parameters):
            return SetParametersResult(
                successful=False, reason="this segmenter has no adjustable post-processing")
        return SetParametersResult(successful=True)

    def apply(self, parameters: list[Parameter]) -> None:
        """Post-set callback: accepted values take effect from the next frame (or at the
        next configure, for a lifecycle node without a pipeline yet)."""
        changed = {param.name: param.value for param in parameters}
        runtime = self.runtime
        runtime.params.update(changed)
        if changed.keys() & LIVE_POSTPROCESS:
            postprocess = PipelineSettings.from_parameters(runtime.params).postprocess
            with runtime.pipeline_lock:
                if runtime.pipeline is not None:
                    runtime.pipeline.set_postprocess(postprocess)

    def validate_and_apply(self, parameters: list[Parameter]) -> SetParametersResult:
        """Humble's fallback (no post-set callbacks): validate everything, then apply."""
        for result in (validate(parameters), self.validate(parameters)):
            if not result.successful:
                return result
        self.apply(parameters)
        return SetParametersResult(successful=True)


class MetaSegNode(Node):
    """ROS 2 node running MetaSegmenter with persistent tracks on a camera stream."""

    def __init__(self, post_set_callbacks: bool | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        declare_parameters(self)
        self.runtime = MetaSegRuntime(self, read_parameters(self))
        self.runtime.load()
        self.runtime.start()
        self.live_parameters = LiveParameters(self, self.runtime, post_set_callbacks)

    def shutdown(self) -> None:
        """Stop the processing thread (after the frame in progress) and free the model."""
        self.runtime.stop()
        self.runtime.unload()


def run_node(make_node: Callable[[], Any], args: list[str] | None = None) -> int:
    """Initialise rclpy, make the node and spin it until Ctrl-C or shutdown; exit code 2
    with one fatal line when the configuration is refused (parameters, checkpoint,
    backend), 0 otherwise. The node's shutdown() runs in every case."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except CONFIGURATION_ERRORS as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"invalid configuration: {error}")
        return 2
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def main(args: list[str] | None = None) -> int:
    """Entry point of the `metaseg_node` executable; exit code 2 on bad configuration."""
    return run_node(MetaSegNode, args)


if __name__ == "__main__":
    sys.exit(main())
