"""metaseg_lifecycle_node: metaseg_node as a managed (lifecycle) node.

    configure   load the weights, build or load the backend (export, engine, CUDA graph);
                start /diagnostics and ~/reset
    activate    publishers, the image subscription, the processing thread
    deactivate  stop processing and publishing; the model stays loaded
    cleanup     drop the model (GPU memory freed)
    shutdown    from any state: whatever is running stops, the model is dropped

A configuration error (a missing or corrupted checkpoint, an unavailable backend) makes
configure fail with a message naming the problem; the node stays unconfigured and can be
configured again. With the parameter `autostart: true` the node drives itself to active.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from metaseg_ros.ros.node import CONFIGURATION_ERRORS, NODE_NAME, LiveParameters, run_node
from metaseg_ros.ros.parameters import declare_parameters, read_parameters
from metaseg_ros.ros.runtime import MetaSegRuntime


class MetaSegLifecycleNode(LifecycleNode):
    """MetaSegmenter with persistent tracks, started and stopped by lifecycle transitions."""

    def __init__(self, post_set_callbacks: bool | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        declare_parameters(self)
        self.runtime = MetaSegRuntime(self, read_parameters(self))
        self.live_parameters = LiveParameters(self, self.runtime, post_set_callbacks)
        self._loaded = self._active = False
        if self.runtime.params["autostart"]:
            self.trigger_configure()
            if self._loaded:
                self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and its backend."""
        self.runtime.params = read_parameters(self)
        try:
            self.runtime.load()
        except CONFIGURATION_ERRORS as error:
            self.get_logger().error(f"configure failed: {error}")
            self.runtime.unload()
            return TransitionCallbackReturn.FAILURE
        self._loaded = True
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start listening and publishing."""
        self.runtime.start()
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop listening and publishing; keep the model."""
        self._stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Drop the model."""
        self._unload()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop whatever runs and drop the model, from any state."""
        self.shutdown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: stop everything; the node can be configured again."""
        self.shutdown()
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self) -> None:
        """Stop processing and free the model (idempotent)."""
        self._stop()
        self._unload()

    def _stop(self) -> None:
        if self._active:
            self.runtime.stop()
            self._active = False

    def _unload(self) -> None:
        if self._loaded:
            self.runtime.unload()
            self._loaded = False


def main(args: list[str] | None = None) -> int:
    """Entry point of the `metaseg_lifecycle_node` executable (exit code 2 when parameters
    are refused at declaration; a bad checkpoint fails configure instead)."""
    return run_node(MetaSegLifecycleNode, args)


if __name__ == "__main__":
    sys.exit(main())
