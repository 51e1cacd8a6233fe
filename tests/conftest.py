"""Session fixtures shared by every test: the data dir, the real model, a tiny random model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tenantserve.engine.models.convert import ensure_default_model
from tests.helpers.models import write_tiny_llama

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Persistent across runs (and shared with `make up`), so SmolLM2 is converted once."""
    path = Path(os.environ.get("TENANTSERVE_TEST_DATA_DIR", REPO_ROOT / ".tenantserve"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def smollm2_dir(data_dir: Path) -> Path:
    """The real SmolLM2-135M-Instruct checkpoint (converted from GGUF on first use)."""
    return ensure_default_model(data_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A seeded random 2-layer Llama with SmolLM2's tokenizer: the engine end to end, fast."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_dir)
