"""Rewrite build-machine paths baked into the ROS wheels' exported CMake files.

The ros-* wheels are built on manylinux images; their `share/**/*.cmake` exports name
`/opt/python/cp3XX-cp3XX/include/python3.X` and that prefix's numpy include directory.
find_package() of message packages then fails with "includes non-existent path". This
replaces them with the paths of the running interpreter. Idempotent.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

NUMPY_INCLUDE = re.compile(
    r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/[\w/]*include")
PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")


def fix_tree(prefix: Path) -> int:
    """Rewrite every exported CMake file under `prefix`/share; return how many changed."""
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text(errors="surrogateescape")
        new = NUMPY_INCLUDE.sub(numpy_include, text)
        new = PYTHON_INCLUDE.sub(python_include, new)
        if new != text:
            path.write_text(new, errors="surrogateescape")
            changed += 1
    return changed


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    print(f"fix_ros_wheel_cmake: rewrote {fix_tree(root)} CMake files under {root}/share")
