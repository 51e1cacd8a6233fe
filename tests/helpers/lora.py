"""Random PEFT LoRA adapters for a Hugging Face checkpoint, written by peft itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
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
