# Two commands set up a fresh machine and do the work:
#   make demo   — build the environment if needed, then run the node on a generated clip
#   make test   — build the environment if needed, then run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_shm.xml

.PHONY: setup demo test lint clean test-jazzy

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

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf build install log .pytest_cache .ruff_cache
