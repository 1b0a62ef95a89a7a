"""The per-run ROS domain (helpers/ros_domain.py, used by conftest.py): concurrent
reservations never share a domain, one comes free when its holder closes or exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ros_domain import reserve_ros_domain

HELPERS = Path(__file__).resolve().parent / "helpers"


def test_reservations_are_exclusive_and_freed_on_close(tmp_path: Path) -> None:
    first, first_fd = reserve_ros_domain(tmp_path, range(5, 8))
    second, second_fd = reserve_ros_domain(tmp_path, range(5, 8))
    assert (first, second) == (5, 6)
    os.close(first_fd)
    again, again_fd = reserve_ros_domain(tmp_path, range(5, 8))
    assert again == 5
    third, third_fd = reserve_ros_domain(tmp_path, range(5, 8))
    assert third == 7
    with pytest.raises(RuntimeError, match=r"every ROS domain in 5\.\.7 is held"):
        reserve_ros_domain(tmp_path, range(5, 8))
    for fd in (second_fd, again_fd, third_fd):
        os.close(fd)


def test_another_process_gets_another_domain_until_the_holder_exits(tmp_path: Path) -> None:
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
            "from ros_domain import reserve_ros_domain; "
            "print(reserve_ros_domain(Path(sys.argv[2]), range(1, 4))[0], flush=True); "
            "time.sleep(float(sys.argv[3]))")
    holder = subprocess.Popen([sys.executable, "-c", code, str(HELPERS), str(tmp_path), "60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "1"
        domain, fd = reserve_ros_domain(tmp_path, range(1, 4))
        assert domain == 2
        os.close(fd)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # The holder is gone (killed, not closed): the kernel released its lock.
    done = subprocess.run([sys.executable, "-c", code, str(HELPERS), str(tmp_path), "0"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "1"


def test_this_run_holds_its_domain() -> None:
    """conftest.py reserved ROS_DOMAIN_ID for this run (unless it was given)."""
    import conftest

    domain = int(os.environ["ROS_DOMAIN_ID"])
    assert 0 <= domain <= 232
    if conftest._domain_lock:
        lock_file = Path(os.readlink(f"/proc/self/fd/{conftest._domain_lock[0]}"))
        assert lock_file.name == f"metaseg_ros_test_domain_{domain}.lock"
        with pytest.raises(RuntimeError, match="is held by another test run"):
            reserve_ros_domain(lock_file.parent, range(domain, domain + 1))
