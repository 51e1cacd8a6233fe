"""Random PEFT LoRA adapters for a Hugging Face checkpoint, written by peft itself."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM


def write_random_adapter(
    model_dir: Path,
    out_dir: Path,
    rank: int,
    targets: Sequence[str],
    seed: int,
    alpha: int | None = None,
    use_rslora: bool = False,
    b_std: float = 0.1,
    peft_options: Mapping[str, Any] | None = None,
) -> Path:
    """Save a PEFT adapter for the checkpoint in `model_dir` into `out_dir` and return it.

    targets: sub-module names (["q_proj", "v_proj"]) or the string "all-linear".
    A and B are random (B is not PEFT's zero init, so the adapter changes the output);
    the same seed gives the same tensors. alpha defaults to 2 * rank; b_std scales B;
    peft_options go to peft's LoraConfig (e.g. rank_pattern, alpha_pattern). Fast for any
    model size: the base model is built on the meta device and its weights are never read.
    """
    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    peft_config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        target_modules=targets if isinstance(targets, str) else list(targets),
        lora_dropout=0.0,
        use_rslora=use_rslora,
        bias="none",
        **dict(peft_options or {}),
    )
    peft_model = get_peft_model(model, peft_config)
    peft_model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".lora_A." in name:
                bound = param.shape[1] ** -0.5
                param.copy_((torch.rand(param.shape, generator=gen) * 2 - 1) * bound)
            elif ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * b_std / rank**0.5)
    out_dir = Path(out_dir)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def set_adapter_config(adapter_dir: Path, **changes: Any) -> Path:
    """Change fields of `adapter_dir/adapter_config.json` (e.g. base_model_name_or_path)."""
    path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return Path(adapter_dir)


def edit_adapter_tensors(
    adapter_dir: Path, edit: Callable[[dict[str, torch.Tensor]], None]
) -> Path:
    """Rewrite `adapter_dir/adapter_model.safetensors` after `edit` changed its tensors
    (keys are PEFT's, e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight`)."""
    path = Path(adapter_dir) / "adapter_model.safetensors"
    tensors = dict(load_file(str(path)))
    edit(tensors)
    save_file(tensors, str(path))
    return Path(adapter_dir)


def zero_lora_b(adapter_dir: Path) -> Path:
    """Set every lora_B to zero (PEFT's init): the adapter then changes nothing."""

    def edit(tensors: dict[str, torch.Tensor]) -> None:
        for key, t in tensors.items():
            if ".lora_B." in key:
                tensors[key] = torch.zeros_like(t)

    return edit_adapter_tensors(adapter_dir, edit)
