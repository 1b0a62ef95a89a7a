# Two commands set up a fresh machine and do the work:
#   make demo   — build the environment if needed, then run the node on a generated clip
#   make test   — build the environment if needed, then run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_shm.xml

.PHONY: setup demo test lint clean test-jazzy test-py310

setup:
	@scripts/setup_env.sh

demo: setup
	$(PY) -m metaseg_ros.cli.demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# The ROS-facing tests again on ROS 2 Jazzy (wheels in .venv-jazzy): messages, node,
# launch command line, conversions and parameters. Jazzy reads the legacy profile variable.
JAZZY_TESTS := test/test_messages.py test/test_node.py test/test_launch_file.py \
	test/test_ros_conversions.py test/test_parameters.py test/test_packaging.py
test-jazzy:
	@METASEG_ROS_DISTRO=jazzy scripts/setup_env.sh
	ROS_DISTRO=jazzy FASTRTPS_DEFAULT_PROFILES_FILE=$(CURDIR)/config/fastdds_shm.xml \
		.venv-jazzy/bin/python -m pytest $(JAZZY_TESTS) $(PYTEST_ARGS)

# The torch-free tests (marker torch_free) on Python 3.10 with numpy 1.26 and the ROS 2
# Jazzy cp310 wheels, in .venv-py310 without torch: what a Jetson on JetPack 6 runs beside
# ROS (messages, conversions, masks and RLE, tracking, parameters and the node with a
# segmenter plugin, bags, metrics). The files are those that carry the marker.
PY310_TESTS := $(shell grep -l "pytest.mark.torch_free" test/test_*.py)
test-py310:
	@METASEG_ROS_DISTRO=jazzy METASEG_VENV=$(CURDIR)/.venv-py310 METASEG_PYTHON_VERSION=3.10 \
		METASEG_PY_REQUIREMENTS=requirements/py310.txt scripts/setup_env.sh
	ROS_DISTRO=jazzy FASTRTPS_DEFAULT_PROFILES_FILE=$(CURDIR)/config/fastdds_shm.xml \
		.venv-py310/bin/python -m pytest -m torch_free $(PY310_TESTS) $(PYTEST_ARGS)

# The project's style is what `ruff check` enforces (pyproject.toml: pycodestyle, imports,
# naming, bugbear, pyupgrade, 100 columns); the code is wrapped by hand, not by `ruff format`.
lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf build install log .pytest_cache .ruff_cache
