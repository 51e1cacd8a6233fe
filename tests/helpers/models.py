"""A tiny random Llama with SmolLM2's real tokenizer: the engine end to end, fast.

Shared by the `tiny_model_dir` fixture and the benchmarks that need a quick model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def write_tiny_llama(out: Path, smollm2_dir: Path) -> Path:
    """Save a seeded 2-layer Llama (vocab 49152) plus SmolLM2's tokenizer files into `out`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

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
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copyfile(smollm2_dir / name, out / name)
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": generation.get("bos_token_id"), "eos_token_id": eos})
    )
    return out
