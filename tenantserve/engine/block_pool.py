"""KV-cache blocks: allocation, reference counts, the tenant-scoped prefix cache and eviction.

Mechanism only; the scheduler decides who gets blocks. A block is in exactly one of
three states:
- in use: ref_count > 0 (held by running sequences);
- cached: ref_count == 0, holds a full block of K/V registered under its hash, evictable;
- free: ref_count == 0, no content worth keeping.

Prefix-cache keys are chained hashes seeded with the request's salt (the tenant,
set by the server) and its adapter, so equal prompts of two tenants, or of one
tenant with two adapters, never map to the same block.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tenantserve.tiers import Tier

BlockHash = bytes


class PrefixMatch(NamedTuple):
    """Blocks whose K/V already hold the first `num_cached_tokens` tokens of a prompt."""

    num_cached_tokens: int
    block_ids: list[int]


@dataclass
class _Block:
    block_id: int
    ref_count: int = 0
    block_hash: BlockHash | None = None
    tenant_id: str | None = None  # who holds it, for per-tenant budgets
    last_used: int = 0


@dataclass(frozen=True)
class BlockPoolStats:
    num_blocks: int
    num_used_blocks: int
    num_cached_blocks: int
    num_free_blocks: int
    num_evictions: int
    blocks_by_tenant: dict[str, int]


def hash_root(salt: str, adapter_id: str | None) -> BlockHash:
    """The seed of a request's hash chain: tenant salt and adapter (None: base model)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(salt.encode())
    h.update(b"\x00")
    h.update((adapter_id or "").encode())
    return h.digest()


def hash_block(prev: BlockHash, token_ids: Sequence[int]) -> BlockHash:
    """Key of a full block given the key of the block before it (collision-resistant)."""
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(array("q", token_ids).tobytes())
    return h.digest()


class BlockPool:
    """Fixed-size KV blocks with reference counts, prefix caching and tenant-aware eviction."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        tier_budget_fraction: Mapping[Tier, float],
        enable_prefix_cache: bool = True,
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_cache = enable_prefix_cache
        self._budget_blocks = {t: int(f * num_blocks) for t, f in tier_budget_fraction.items()}
        self._blocks = [_Block(i) for i in range(num_blocks)]
        self._free: deque[int] = deque(range(num_blocks))
        self._cached: dict[BlockHash, int] = {}
        # Evictable (cached, ref_count 0) blocks per tenant, least recently used first.
        self._evictable: dict[str, OrderedDict[int, None]] = {}
        self._held: dict[str, int] = {}  # blocks per tenant: in use + cached
        self._tier: dict[str, Tier] = {}
        self._clock = 0
        self._num_evictable = 0
        self.num_evictions = 0

    # -- queries ------------------------------------------------------------------------

    @property
    def num_available_blocks(self) -> int:
        """Blocks an allocation could get now: free plus evictable."""
        return len(self._free) + self._num_evictable

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free) - self._num_evictable

    def ref_count(self, block_id: int) -> int:
        return self._blocks[block_id].ref_count

    def stats(self) -> BlockPoolStats:
        return BlockPoolStats(
            num_blocks=self.num_blocks,
            num_used_blocks=self.num_used_blocks,
            num_cached_blocks=len(self._cached),
            num_free_blocks=len(self._free),
            num_evictions=self.num_evictions,
            blocks_by_tenant={t: n for t, n in self._held.items() if n},
        )

    def match_prefix(self, block_hashes: Sequence[BlockHash]) -> PrefixMatch:
        """Longest run of cached blocks for these full-block hashes. Takes no references."""
        block_ids: list[int] = []
        if self.enable_prefix_cache:
            for h in block_hashes:
                block_id = self._cached.get(h)
                if block_id is None:
                    break
                block_ids.append(block_id)
        return PrefixMatch(len(block_ids) * self.block_size, block_ids)

    # -- mutations ----------------------------------------------------------------------

    def touch(self, block_ids: Sequence[int], tenant_id: str, tier: Tier) -> None:
        """Take a reference on cached blocks found by `match_prefix`."""
        self._tier[tenant_id] = tier
        for block_id in block_ids:
            block = self._blocks[block_id]
            if block.ref_count == 0:
                assert block.tenant_id is not None
                self._evictable[block.tenant_id].pop(block_id)
                self._num_evictable -= 1
            block.ref_count += 1

    def allocate(self, num: int, tenant_id: str, tier: Tier) -> list[int] | None:
        """`num` fresh blocks held by the tenant (ref_count 1), evicting cached blocks
        if needed; None (and no change) if fewer than `num` are available."""
        if num > self.num_available_blocks:
            return None
        self._tier[tenant_id] = tier
        out: list[int] = []
        for _ in range(num):
            block_id = self._free.popleft() if self._free else self._evict_one()
            block = self._blocks[block_id]
            block.ref_count = 1
            block.tenant_id = tenant_id
            self._held[tenant_id] = self._held.get(tenant_id, 0) + 1
            out.append(block_id)
        return out

    def free(self, block_ids: Sequence[int]) -> None:
        """Drop one reference on each block, last block first, so that under LRU a
        sequence's tail is evicted before its (more shareable) head."""
        self._clock += 1
        for block_id in reversed(block_ids):
            block = self._blocks[block_id]
            assert block.ref_count > 0, f"double free of block {block_id}"
            block.ref_count -= 1
            if block.ref_count:
                continue
            block.last_used = self._clock
            assert block.tenant_id is not None
            if block.block_hash is not None:
                self._evictable.setdefault(block.tenant_id, OrderedDict())[block_id] = None
                self._num_evictable += 1
            else:
                self._release(block)
                self._free.append(block_id)

    def register(self, block_id: int, block_hash: BlockHash) -> None:
        """Publish a full, computed block under its hash (first writer wins)."""
        if not self.enable_prefix_cache:
            return
        block = self._blocks[block_id]
        if block.block_hash is not None or block_hash in self._cached:
            return
        block.block_hash = block_hash
        self._cached[block_hash] = block_id

    def reset_prefix_cache(self) -> None:
        """Forget every cached block (e.g. after the model's weights changed)."""
        for tenant_blocks in self._evictable.values():
            for block_id in tenant_blocks:
                block = self._blocks[block_id]
                self._release(block)
                self._free.append(block_id)
            tenant_blocks.clear()
        self._num_evictable = 0
        for block in self._blocks:
            block.block_hash = None
        self._cached.clear()

    # -- eviction -----------------------------------------------------------------------

    def _evict_one(self) -> int:
        """Evict one cached block: tenants over their tier budget first, then lower tiers,
        then the least recently used."""
        best: tuple[bool, int, int] | None = None
        victim_tenant = ""
        for tenant_id, blocks in self._evictable.items():
            if not blocks:
                continue
            oldest = self._blocks[next(iter(blocks))].last_used
            tier = self._tier[tenant_id]
            within_budget = self._held.get(tenant_id, 0) <= self._budget_blocks.get(tier, 0)
            key = (within_budget, tier.priority, oldest)
            if best is None or key < best:
                best, victim_tenant = key, tenant_id
        assert best is not None, "no evictable block"
        block_id, _ = self._evictable[victim_tenant].popitem(last=False)
        self._num_evictable -= 1
        block = self._blocks[block_id]
        assert block.block_hash is not None
        del self._cached[block.block_hash]
        block.block_hash = None
        self._release(block)
        self.num_evictions += 1
        return block_id

    def _release(self, block: _Block) -> None:
        assert block.tenant_id is not None
        self._held[block.tenant_id] -= 1
        block.tenant_id = None
