# Two commands set up a fresh machine and do the work:
#   make demo   — build the environment if needed, then run the node on a generated clip
#   make test   — build the environment if needed, then run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_shm.xml

.PHONY: setup demo test lint clean

setup:
	@scripts/setup_env.sh

demo: setup
	$(PY) -m metaseg_ros.cli.demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf build install log .pytest_cache .ruff_cache
