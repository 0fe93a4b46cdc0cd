# host-local-sqlite: every target installs what it needs, so a fresh clone works.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install compile demo test lint typecheck bench wheel-smoke clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

# Byte-code for the editable sources, as a wheel install would have it (the plugin starts
# once per container; PYTHONDONTWRITEBYTECODE may be set, so compile explicitly).
compile: install
	$(PY) -m compileall -q ipam cli migrations > /dev/null

demo: compile
	$(PY) tools/demo.py

test: compile
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check ipam cli migrations tests tools

typecheck: install
	$(VENV)/bin/mypy

bench: compile
	$(PY) -m pip install -q -e '.[test,bench]' --config-settings editable_mode=compat
	$(PY) tools/bench.py $(BENCH_ARGS)

wheel-smoke: install
	$(PY) -m pytest tests/test_wheel.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
