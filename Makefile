# Two commands do all set-up on a fresh machine: `make demo` and `make test` (both depend on `make setup`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint typecheck unit bench lock system-deps clean

setup: $(STAMP)

# The venv is rebuilt from the committed lock (constraints.txt) whenever it or pyproject.toml changes.
# uv installs the ~220 pinned packages in seconds; pip would take minutes.
# --compile-bytecode and compileall write the .pyc files at install time: machines like CI's set
# PYTHONDONTWRITEBYTECODE=1, and without them every process compiled MLflow, Strands, openai and scipy from
# source on each start (9.4 s against 4.9 s for their imports; docs/performance.md).
$(STAMP): constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r constraints.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@$(BIN)/python -m compileall -q agent_release pipelines steps agents >/dev/null
	@touch $(STAMP)

# Debian packages the test suite needs (headless Chromium renders the HTML report). Installed only when
# missing; needs root and the Debian package registry.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  echo "installing chromium + chromium-driver (report rendering tests)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "warning: could not install chromium; the report rendering test will be skipped (failed under CI=true)"; \
	fi

demo: setup
	$(BIN)/agent-release validate
	$(BIN)/agent-release run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit -q

# Two workers: most of the suite's wall time is waiting (bakes, timeouts, subprocess pipelines), not CPU.
# --dist loadfile keeps a file's tests (and its module-scoped pipeline runs) on one worker.
test: setup system-deps lint typecheck
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=15

bench: setup
	@for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# Regenerate the lock from pyproject.toml (run after changing dependencies, then commit constraints.txt).
lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o constraints.txt

clean:
	rm -rf .agent-release .pytest_cache .mypy_cache .ruff_cache
