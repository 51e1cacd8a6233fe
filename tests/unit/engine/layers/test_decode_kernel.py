from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tenantserve.engine.layers.attention import AttentionMetadata, KVCache, paged_attention
from tenantserve.engine.layers.decode_kernel import (
    DecodeKernel,
    build_directory,
    load_decode_kernel,
)


@pytest.fixture(scope="module")
def kernel() -> DecodeKernel:
    k = load_decode_kernel()
    assert k is not None, "the C++ decode kernel must build on this machine (g++ and ninja)"
    return k


def sdpa_reference(
    q: torch.Tensor, cache: KVCache, table: torch.Tensor, lens: list[int], scale: float
) -> torch.Tensor:
    bs = cache.k.shape[1]
    span = torch.arange(table.shape[1] * bs)
    mask = torch.zeros(len(lens), table.shape[1] * bs, dtype=q.dtype)
    mask.masked_fill_(span[None, :] >= torch.tensor(lens)[:, None], float("-inf"))
    meta = AttentionMetadata(
        slot_mapping=torch.empty(0, dtype=torch.long),
        num_decode_tokens=len(lens),
        decode_block_table=table,
        decode_mask=mask.view(len(lens), 1, 1, -1),
        prefills=(),
    )
    empty_kv = torch.empty(len(lens), cache.k.shape[2], cache.k.shape[3], dtype=q.dtype)
    return paged_attention(q, empty_kv, empty_kv, cache, meta, scale)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize(("heads", "kv_heads"), [(9, 3), (4, 4), (8, 1)])
def test_kernel_equals_gathered_sdpa_on_scattered_blocks(
    kernel: DecodeKernel, dtype: torch.dtype, tol: float, heads: int, kv_heads: int
) -> None:
    torch.manual_seed(0)
    bs, dim, num_blocks = 4, 32, 64
    cache = KVCache(num_blocks, bs, kv_heads, dim, dtype, torch.device("cpu"))
    cache.k.normal_()
    cache.v.normal_()
    lens = [1, 5, 16, 23, 37]
    perm = torch.randperm(num_blocks)
    max_blocks = -(-max(lens) // bs)
    table = torch.zeros(len(lens), max_blocks, dtype=torch.long)
    used = 0
    for i, n in enumerate(lens):
        nb = -(-n // bs)
        table[i, :nb] = perm[used : used + nb]
        used += nb
    q = torch.randn(len(lens), heads, dim).to(dtype)
    got = kernel(q, cache.k, cache.v, table, torch.tensor(lens), dim**-0.5)
    ref = sdpa_reference(q, cache, table, lens, dim**-0.5)
    torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)


def test_kernel_refuses_mismatched_head_shapes(kernel: DecodeKernel) -> None:
    cache = KVCache(4, 4, 3, 16, torch.float32, torch.device("cpu"))
    q = torch.randn(1, 4, 16)  # 4 heads do not group over 3 kv heads
    with pytest.raises(RuntimeError, match="head shapes"):
        kernel(q, cache.k, cache.v, torch.zeros(1, 1, dtype=torch.long), torch.tensor([1]), 1.0)


def test_a_lock_left_by_a_killed_build_does_not_hang_the_next_start() -> None:
    build = build_directory()
    build.mkdir(parents=True, exist_ok=True)
    (build / "lock").touch()  # what torch's build baton leaves when its build is killed
    code = (
        "from tenantserve.engine.layers.decode_kernel import load_decode_kernel\n"
        "assert load_decode_kernel() is not None\n"
    )
    subprocess.run([sys.executable, "-c", code], timeout=300, check=True)
    assert not (build / "lock").exists()
    assert build.name.endswith(torch.backends.cpu.get_cpu_capability().lower())
