"""Session fixtures shared by every test: the data dir, the real model, a tiny random model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tenantserve.engine.models.convert import ensure_default_model

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


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
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=generation.get("bos_token_id"),
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copyfile(smollm2_dir / name, out / name)
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": generation.get("bos_token_id"), "eos_token_id": eos})
    )
    return out
