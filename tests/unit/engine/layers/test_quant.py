from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tenantserve.engine.layers.quant import FUSED_MAX_ROWS, Int8Linear, quantize_int8
from tenantserve.engine.models.checkpoint import load_model


@pytest.mark.parametrize("rows", [1, FUSED_MAX_ROWS, FUSED_MAX_ROWS + 1, 64])
def test_int8_linear_is_within_one_percent_of_fp32(rows: int) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(128, 96, bias=True)
    q = Int8Linear(linear)
    x = torch.randn(rows, 128)
    ref = linear(x)
    got = q(x).float()
    rel = (got - ref).norm() / ref.norm()
    assert rel < 0.01


def test_fused_and_dequantized_paths_agree() -> None:
    torch.manual_seed(1)
    q = Int8Linear(nn.Linear(64, 32, bias=False))
    x = torch.randn(FUSED_MAX_ROWS + 1, 64)
    small = torch.cat([q(x[i : i + 1]) for i in range(x.shape[0])]).float()
    big = q(x).float()
    torch.testing.assert_close(small, big, rtol=2e-2, atol=2e-2)


def test_int8_weights_take_a_quarter_of_fp32_bytes(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    fp32 = sum(m.weight.numel() * 4 for m in model.layers[0].modules() if isinstance(m, nn.Linear))
    quantize_int8(model)
    int8 = sum(
        m.weight_int8.numel() + m.scale.numel() * 2
        for m in model.layers[0].modules()
        if isinstance(m, Int8Linear)
    )
    assert int8 < fp32 / 3.5
    assert not any(isinstance(m, nn.Linear) for m in model.layers.modules())
