"""`routes_pools`: the JSON of a pool whose backend gives no stats (an upstream server) and
of an engine pool whose engine did not answer — replicas with nulls, never an error."""

from __future__ import annotations

from tenantserve.gateway.pools import UpstreamModel, UpstreamPool
from tenantserve.gateway.routes_pools import pool_json, replica_json, snapshot
from tenantserve.gateway.upstream import OpenAIUpstream
from tenantserve.observability.engine_metrics import PoolSnapshot
from tenantserve.scheduling.fair_queue import FairQueue
from tenantserve.tenancy.model import Region


def _upstream_pool() -> UpstreamPool:
    return UpstreamPool(
        name="eu-upstream",
        upstream=OpenAIUpstream("http://127.0.0.1:9"),
        models=(UpstreamModel("big", "org/big", 8192), UpstreamModel("big@2", "org/big2", 8192)),
        region=Region.EU,
        reserved_for=frozenset({"t_b", "t_a"}),
    )


async def test_an_upstream_pool_has_one_replica_without_stats() -> None:
    pool = _upstream_pool()
    out = pool_json(pool, await snapshot(pool))
    assert out["kind"] == "upstream" and out["models"] == ["big", "big@2"]
    assert out["region"] == "eu" and out["reserved_for"] == ["t_a", "t_b"]
    assert out["queue"]["in_flight"] == 0 and out["queue"]["demoted_tenants"] == 0
    [replica] = out["replicas"]
    assert replica == {
        "id": "eu-upstream/0",
        "backend": "upstream",
        "up": None,
        "restarts": None,
        "running": None,
        "waiting": None,
        "kv_cache": None,
        "adapters": None,
    }


def test_an_engine_that_did_not_answer_is_down_with_its_restarts() -> None:
    down = PoolSnapshot("local", FairQueue().stats(), None, False, 3)
    replica = replica_json("local/0", True, down)
    assert replica["backend"] == "engine"
    assert replica["up"] is False and replica["restarts"] == 3
    assert replica["kv_cache"] is None and replica["running"] is None
