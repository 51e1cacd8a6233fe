from __future__ import annotations

import pytest
import torch
from torch import nn

from tenantserve.engine.layers.onednn import OneDnnLinear, onednn_available


def test_this_torch_build_has_onednn() -> None:
    # The pinned CPU wheel ships oneDNN; the engine relies on it for CPU throughput.
    assert onednn_available(torch.device("cpu"))


# The dtypes oneDNN packs on this CPU: bf16 only with bf16 GEMMs (on an AVX2-only CPU
# the engine keeps plain bf16 linears: the last test).
PACKED = [
    (dtype, tol)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2))
    if onednn_available(torch.device("cpu"), dtype)
]


@pytest.mark.parametrize("rows", [1, 7, 32, 300])
@pytest.mark.parametrize(("dtype", "tol"), PACKED)
def test_packed_linear_equals_plain_linear(rows: int, dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(96, 160, bias=True).to(dtype)
    packed = OneDnnLinear(linear, batch_hint=32)
    x = torch.randn(rows, 96).to(dtype)
    torch.testing.assert_close(packed(x).float(), linear(x).float(), rtol=tol, atol=tol)


def test_bf16_is_packed_only_where_the_cpu_has_bf16_gemms() -> None:
    cpu = torch.device("cpu")
    assert onednn_available(cpu, torch.float32)
    assert onednn_available(cpu, torch.bfloat16) is torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert not onednn_available(torch.device("meta"), torch.float32)
