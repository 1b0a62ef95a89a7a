"""Shared test set-up: an isolated ROS domain and the shipped Fast DDS profile.

Both must be in the environment before the first DDS participant is created, so they
are set here at import time; child processes (nodes under test) inherit them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from metaseg_ros.ros.launch_command import profile_variables

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
for _variable in profile_variables(os.environ.get("ROS_DISTRO", "")):
    os.environ[_variable] = str(REPO / "config" / "fastdds_shm.xml")
os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
# Exported models (backend auto/onnxruntime in node tests) go to a cache of this session,
# not to the user's ~/.cache/metaseg_ros.
if "METASEG_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["METASEG_CACHE_DIR"] = tempfile.mkdtemp(prefix="metaseg_test_cache_")
sys.path.insert(0, str(REPO / "test" / "helpers"))


@pytest.fixture(scope="session")
def rclpy_context():
    """rclpy initialised once for the test session (skipped where rclpy is missing)."""
    rclpy = pytest.importorskip("rclpy")
    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()


# Property-based tests (hypothesis): `ci` by default, HYPOTHESIS_PROFILE=nightly for more.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=100, deadline=2000,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("nightly", max_examples=2000, deadline=5000,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test requirement; without it those tests are skipped
    pass
