from __future__ import annotations

from tenantserve.engine.block_pool import BlockPool, hash_block, hash_root
from tenantserve.tiers import Tier

BUDGET = {Tier.FREE: 0.25, Tier.STANDARD: 0.5, Tier.PREMIUM: 0.75}


def chain(salt: str, adapter: str | None, blocks: list[list[int]]) -> list[bytes]:
    out, prev = [], hash_root(salt, adapter)
    for tokens in blocks:
        prev = hash_block(prev, tokens)
        out.append(prev)
    return out


def cache_blocks(pool: BlockPool, tenant: str, tier: Tier, hashes: list[bytes]) -> list[int]:
    ids = pool.allocate(len(hashes), tenant, tier)
    assert ids is not None
    for block_id, h in zip(ids, hashes, strict=True):
        pool.register(block_id, h)
    pool.free(ids)
    return ids


def test_same_tokens_hash_differently_per_tenant_and_adapter() -> None:
    blocks = [[1, 2, 3, 4], [5, 6, 7, 8]]
    a = chain("tenant-a", None, blocks)
    assert a == chain("tenant-a", None, blocks)
    assert set(a).isdisjoint(chain("tenant-b", None, blocks))
    assert set(a).isdisjoint(chain("tenant-a", "adapter-1", blocks))


def test_hash_of_a_block_depends_on_every_block_before_it() -> None:
    x = chain("t", None, [[1, 2], [3, 4]])
    y = chain("t", None, [[9, 9], [3, 4]])
    assert x[1] != y[1]


def test_allocate_refuses_without_side_effects_when_short() -> None:
    pool = BlockPool(4, 4, BUDGET)
    assert pool.allocate(5, "t", Tier.FREE) is None
    assert pool.num_available_blocks == 4
    assert pool.num_used_blocks == 0


def test_freed_registered_blocks_are_found_by_prefix_match_until_evicted() -> None:
    pool = BlockPool(4, 4, BUDGET)
    hashes = chain("t", None, [[1, 2, 3, 4], [5, 6, 7, 8]])
    ids = cache_blocks(pool, "t", Tier.STANDARD, hashes)
    match = pool.match_prefix(hashes)
    assert match.num_cached_tokens == 8
    assert match.block_ids == ids
    pool.touch(match.block_ids, "t", Tier.STANDARD)
    assert pool.num_used_blocks == 2
    pool.free(match.block_ids)
    assert pool.num_used_blocks == 0


def test_prefix_match_stops_at_the_first_miss() -> None:
    pool = BlockPool(4, 4, BUDGET)
    hashes = chain("t", None, [[1, 2, 3, 4], [5, 6, 7, 8]])
    cache_blocks(pool, "t", Tier.STANDARD, hashes[:1])
    assert pool.match_prefix(hashes).num_cached_tokens == 4


def test_block_referenced_twice_survives_one_free() -> None:
    pool = BlockPool(2, 4, BUDGET)
    hashes = chain("t", None, [[1, 2, 3, 4]])
    ids = pool.allocate(1, "t", Tier.FREE)
    assert ids is not None
    pool.register(ids[0], hashes[0])
    pool.touch(ids, "t", Tier.FREE)
    pool.free(ids)
    assert pool.ref_count(ids[0]) == 1
    pool.free(ids)
    assert pool.ref_count(ids[0]) == 0
    assert pool.num_used_blocks == 0


def test_flooding_free_tenant_evicts_its_own_cache_before_premium_working_set() -> None:
    pool = BlockPool(8, 4, BUDGET)
    premium = chain("premium", None, [[i] * 4 for i in range(3)])
    cache_blocks(pool, "premium", Tier.PREMIUM, premium)
    # The free tenant fills the rest of the cache with its own prompts, then keeps going.
    for round_ in range(10):
        flood = chain("free", None, [[100 + round_, j, j, j] for j in range(4)])
        cache_blocks(pool, "free", Tier.FREE, flood)
    assert pool.match_prefix(premium).num_cached_tokens == 12
    assert pool.num_evictions > 0


def test_tenant_over_budget_is_evicted_before_a_lower_tier_within_budget() -> None:
    # free budget: 2 blocks of 8; standard budget: 4 blocks.
    pool = BlockPool(8, 4, BUDGET)
    free_hashes = chain("f", None, [[1] * 4])
    cache_blocks(pool, "f", Tier.FREE, free_hashes)
    std_hashes = chain("s", None, [[i] * 4 for i in range(2, 8)])  # 6 blocks: over budget
    cache_blocks(pool, "s", Tier.STANDARD, std_hashes)
    new = pool.allocate(2, "p", Tier.PREMIUM)  # 1 free block + 1 eviction
    assert new is not None
    assert pool.match_prefix(free_hashes).num_cached_tokens == 4
    assert pool.num_evictions == 1


def test_lru_within_a_tenant_evicts_the_tail_of_a_sequence_first() -> None:
    pool = BlockPool(3, 4, BUDGET)
    hashes = chain("t", None, [[1] * 4, [2] * 4, [3] * 4])
    cache_blocks(pool, "t", Tier.STANDARD, hashes)
    assert pool.allocate(1, "t", Tier.STANDARD) is not None
    # The head of the prompt is still cached; only the last block went.
    assert pool.match_prefix(hashes).num_cached_tokens == 8


def test_disabled_prefix_cache_never_matches() -> None:
    pool = BlockPool(4, 4, BUDGET, enable_prefix_cache=False)
    hashes = chain("t", None, [[1, 2, 3, 4]])
    cache_blocks(pool, "t", Tier.STANDARD, hashes)
    assert pool.match_prefix(hashes).num_cached_tokens == 0
    assert pool.num_available_blocks == 4
