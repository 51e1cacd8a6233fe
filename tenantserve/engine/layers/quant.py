"""Weight-only int8 quantization: a transform that swaps the model's linears.

Per-output-channel symmetric int8 weights with bf16 scales. Small batches (decode) use
PyTorch's fused int8-weight GEMM (`_weight_int8pack_mm`), which reads a quarter of the
fp32 bytes: batch-1 decode is memory-bound, so this is where it pays. Larger batches
(prefill chunks) dequantize to bf16 on the fly and use the bf16 GEMM. The model file
knows nothing of this; run it after loading weights and before `apply_lora`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tenantserve.engine.models.llama import LlamaForCausalLM

# Above this many rows the fused int8 kernel is slower than dequantize + bf16 GEMM.
FUSED_MAX_ROWS = 8


class Int8Linear(nn.Module):
    """y = x @ (w_int8 * scale).T + bias, activations in bf16."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()  # [out, in]
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # [out]
        self.weight_int8: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().bfloat16())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.bfloat16)
        if x.shape[0] <= FUSED_MAX_ROWS and x.device.type == "cpu":
            y = torch._weight_int8pack_mm(x, self.weight_int8, self.scale)
        else:
            w = self.weight_int8.to(torch.bfloat16) * self.scale[:, None]
            y = F.linear(x, w)
        return y if self.bias is None else y + self.bias


def quantize_int8(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """Replace every decoder linear and the LM head by `Int8Linear`; the rest becomes bf16.
    The tied embedding keeps its own bf16 table."""
    model.to(torch.bfloat16)
    for layer in model.layers:
        for block in (layer.get_submodule("self_attn"), layer.get_submodule("mlp")):
            for name, child in list(block.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(block, name, Int8Linear(child))
    model.lm_head = Int8Linear(model.lm_head)  # type: ignore[assignment]
    model.rotary.float()
    return model
