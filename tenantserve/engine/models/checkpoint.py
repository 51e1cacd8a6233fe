"""Load a Hugging Face checkpoint directory (config.json + *.safetensors) into our model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from tenantserve.engine.layers.rotary import RotaryEmbedding
from tenantserve.engine.models.llama import LlamaConfig, LlamaForCausalLM
from tenantserve.errors import CheckpointError


def read_config(model_dir: Path) -> LlamaConfig:
    """The model geometry from `model_dir/config.json`."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{model_dir} has no config.json; is it a Hugging Face checkpoint?")
    try:
        return LlamaConfig.from_hf(json.loads(path.read_text()))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot read model config ({e})") from e


def iter_safetensors(model_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of every *.safetensors file in the directory (memory-mapped)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{model_dir} has no *.safetensors files")
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                yield name, f.get_tensor(name)


def load_model(
    model_dir: Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_positions: int | None = None,
) -> LlamaForCausalLM:
    """Build the model from its config and load its weights; eval mode, no grad."""
    cfg = read_config(model_dir)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg, max_positions=max_positions)
    model = model.to_empty(device="cpu")
    # Buffers (rotary tables) are not in the checkpoint: rebuild them on the real device.
    model.rotary = RotaryEmbedding(
        cfg.head_dim, max_positions or cfg.max_position_embeddings, cfg.rope_theta
    )
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.load_weights((name, t.float()) for name, t in iter_safetensors(model_dir))
    model = model.to(device=device, dtype=dtype)
    model.rotary.to(dtype=torch.float32)
    model.eval().requires_grad_(False)
    return model
