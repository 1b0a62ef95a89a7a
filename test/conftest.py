"""Shared test set-up: an isolated ROS graph and the shipped Fast DDS profile.

Both must be in the environment before the first DDS participant is created, so they
are set here at import time; child processes (nodes under test) inherit them.

Isolation: discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; on
Humble, ROS_LOCALHOST_ONLY=1), and each test run holds a ROS domain of its own among the
runs on this machine, reserved with a lock file (helpers/ros_domain.py) that the run keeps
locked while it lives. A domain given in ROS_DOMAIN_ID is used as it is (so a run started
by another run shares its parent's).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from metaseg_ros.ros.launch_command import profile_variables

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test" / "helpers"))
from ros_domain import reserve_ros_domain  # noqa: E402

_domain_lock: list[int] = []  # the locked file descriptor, open while the run lives
if "ROS_DOMAIN_ID" not in os.environ:
    _domain, _fd = reserve_ros_domain(Path(tempfile.gettempdir()))
    _domain_lock.append(_fd)
    os.environ["ROS_DOMAIN_ID"] = str(_domain)
if os.environ.get("ROS_DISTRO") == "humble":
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
else:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
for _variable in profile_variables(os.environ.get("ROS_DISTRO", "")):
    os.environ[_variable] = str(REPO / "config" / "fastdds_shm.xml")
os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
# Exported models (backend auto/onnxruntime in node tests) go to a cache of this session,
# not to the user's ~/.cache/metaseg_ros.
if "METASEG_CACHE_DIR" not in os.environ:
    os.environ["METASEG_CACHE_DIR"] = tempfile.mkdtemp(prefix="metaseg_test_cache_")


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
