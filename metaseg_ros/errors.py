"""The errors a configuration can cause, in one torch-free module.

The node reports them in one line (exit code 2, or a failed lifecycle configure) and must
be able to name them without importing torch: a node running a segmenter plugin, or the
Python 3.10 lane without torch, imports this module only. The modules that raise them
(inference/artifacts.py, inference/runner.py, model/checkpoint.py) re-export them.
"""

from __future__ import annotations


class ArtifactError(RuntimeError):
    """An artifact is missing, malformed, unsafe to load or does not fit the request."""


class BackendUnavailableError(RuntimeError):
    """A backend cannot run here; the message names everything that is missing."""


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model (names or shapes) or is malformed."""
