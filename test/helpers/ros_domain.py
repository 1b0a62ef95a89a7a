"""A ROS domain of its own for each test run on this machine (used by test/conftest.py).

ROS_DOMAIN_ID has only about a hundred usable values (0..101 for every RMW on Linux), so
no value derived from a process id is unique. Instead a run takes the first domain whose
lock file it can lock exclusively (flock): the kernel keeps that lock while the file stays
open and drops it when the process ends, however it ends, so concurrent runs that reserve
this way never share a domain, and a domain comes free with its run.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

DOMAINS = range(1, 102)  # 0 stays free for the machine's own ROS graph


def reserve_ros_domain(lock_dir: Path, domains: range = DOMAINS) -> tuple[int, int]:
    """(domain, fd): the first domain whose lock file in lock_dir this process could lock
    exclusively; the reservation lasts while fd stays open."""
    for domain in domains:
        try:
            fd = os.open(lock_dir / f"metaseg_ros_test_domain_{domain}.lock",
                         os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # e.g. another user's lock file
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return domain, fd
    raise RuntimeError(f"every ROS domain in {domains.start}..{domains.stop - 1} is held by "
                       f"another test run on this machine (lock files in {lock_dir})")
