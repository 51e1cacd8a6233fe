"""CPU GEMMs on oneDNN with prepacked weights: a transform that swaps the model's linears.

`F.linear` on CPU calls MKL's sgemm on the [out, in] weight as stored; oneDNN with the
weight reordered once into its blocked layout runs the same products 1.5-3x faster on
the shapes a small decoder has (measured in docs/benchmarks.md), for decode rows and
prefill chunks alike. Same math in the same dtype (fp32 or bf16); only the summation
order differs. The model file knows nothing of this; run it after loading weights and
before `apply_lora`.
"""

from __future__ import annotations

import torch
from torch import nn

from tenantserve.engine.models.llama import LlamaForCausalLM


def onednn_available(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """oneDNN packs weights of this dtype here: CPU, and for bf16 a CPU with bf16 GEMMs
    (AVX512-BF16 / AVX-NE-CONVERT / AMX; on plain AVX2 oneDNN refuses the bf16 reorder)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return dtype != torch.bfloat16 or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class OneDnnLinear(nn.Module):
    """y = x @ W.T + b with W held in oneDNN's packed layout (CPU, fp32 or bf16)."""

    def __init__(self, linear: nn.Linear, batch_hint: int) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight: torch.Tensor
        self.register_buffer(
            "packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint)
        )
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, in] -> [T, out]."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")


def pack_linears(model: LlamaForCausalLM, batch_hint: int) -> LlamaForCausalLM:
    """Replace every decoder linear and the LM head by `OneDnnLinear`. The tied embedding
    keeps its own table (the LM head's packed copy is separate)."""
    for layer in model.layers:
        for block in (layer.get_submodule("self_attn"), layer.get_submodule("mlp")):
            for name, child in list(block.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(block, name, OneDnnLinear(child, batch_hint))
    model.lm_head = OneDnnLinear(model.lm_head, batch_hint)  # type: ignore[assignment]
    return model
