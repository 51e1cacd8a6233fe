"""The serving pools and their replicas, for operators, behind the Bearer admin token.

    GET /admin/pools        every pool, its queue and its replicas' live stats
                            -> {"object": "list", "data": [pool]}

    pool     {"object": "pool", "name", "kind": "engine" | "upstream", "models": [name],
              "region", "reserved_for": [tenant id],
              "queue": {"in_flight", "waiting": {tier: n}, "rejected": {tier: n},
                        "shed": {tier: n}, "demoted_tenants": n},
              "replicas": [replica]}
    replica  {"id": "<pool>/<n>", "backend": "engine" | "upstream", "up": bool | null,
              "restarts": n | null, "running": n | null, "waiting": n | null,
              "kv_cache": {"blocks", "used_blocks", "cached_blocks", "free_blocks",
                           "usage"} | null,
              "adapters": {"active", "pinned", "host", "loading", "failed",
                           "hot": [adapter id]} | null}

A built-in engine pool has one replica today (its engine process); its stats are asked for
with a deadline, and an engine that does not answer (restarting, shut down) is `up: false`
with null stats. An upstream pool's one replica is the external server, of which
tenantserve knows no stats (`up: null`). `replicas` is a list because Ray-backed pools
serve from several. `hot` lists the adapters in the engine's device slots, most recently
used first (at most `MAX_HOT_ADAPTERS`), by their opaque ids. The answer holds counts and
ids only, no tenant's data (the reserved-for ids are configuration), so reads are not
written to the audit log: a console refreshing it every few seconds would flood it. A
missing or wrong token (a tenant's key included) is 401.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request

from tenantserve.gateway.auth import check_admin
from tenantserve.gateway.pools import EnginePool, Pool
from tenantserve.observability.engine_metrics import PoolSnapshot, snapshot

if TYPE_CHECKING:  # the engine module imports torch; the gateway only reads its stats
    from tenantserve.engine.engine import EngineStats

logger = logging.getLogger(__name__)

MAX_HOT_ADAPTERS = 32


class PoolRoutes:
    """Handler of `GET /admin/pools`; checks the admin token first."""

    def __init__(self, pools: Sequence[Pool], admin_token: str) -> None:
        self.pools = tuple(pools)
        self._token = admin_token.encode()

    def install(self, app: FastAPI) -> None:
        """Add the pools route to `app`."""
        app.add_api_route("/admin/pools", self.list_pools, methods=["GET"])

    async def list_pools(self, request: Request) -> dict[str, Any]:
        check_admin(request.headers.get("authorization"), self._token)
        snapshots = await asyncio.gather(*(snapshot(p) for p in self.pools))
        data = [pool_json(p, s) for p, s in zip(self.pools, snapshots, strict=True)]
        return {"object": "list", "data": data}


def pool_json(pool: Pool, snap: PoolSnapshot) -> dict[str, Any]:
    """The JSON of one pool (module docstring) from its configuration and `snap`."""
    engine_pool = isinstance(pool, EnginePool)
    models = [pool.model.name] if isinstance(pool, EnginePool) else [m.name for m in pool.models]
    q = snap.queue
    return {
        "object": "pool",
        "name": pool.name,
        "kind": "engine" if engine_pool else "upstream",
        "models": models,
        "region": pool.region.value,
        "reserved_for": sorted(pool.reserved_for),
        "queue": {
            "in_flight": q.in_flight,
            "waiting": {t.value: n for t, n in q.waiting.items()},
            "rejected": {t.value: n for t, n in q.rejected.items()},
            "shed": {t.value: n for t, n in q.shed.items()},
            "demoted_tenants": len(q.demoted_until),
        },
        "replicas": [replica_json(f"{pool.name}/0", engine_pool, snap)],
    }


def replica_json(replica_id: str, engine_pool: bool, snap: PoolSnapshot) -> dict[str, Any]:
    """One replica: an engine's live stats, or nulls where they are not known."""
    out: dict[str, Any] = {
        "id": replica_id,
        "backend": "engine" if engine_pool else "upstream",
        "up": snap.engine_up,
        "restarts": snap.engine_restarts if snap.engine_up is not None else None,
        "running": None,
        "waiting": None,
        "kv_cache": None,
        "adapters": None,
    }
    if snap.engine is not None:
        out.update(_engine_stats_json(snap.engine))
    return out


def _engine_stats_json(s: EngineStats) -> dict[str, Any]:
    kv = s.kv
    cached = kv.num_blocks - kv.num_used_blocks - kv.num_free_blocks  # evictable
    a = s.adapters
    return {
        "running": s.num_running,
        "waiting": s.num_waiting,
        "kv_cache": {
            "blocks": kv.num_blocks,
            "used_blocks": kv.num_used_blocks,
            "cached_blocks": cached,
            "free_blocks": kv.num_free_blocks,
            "usage": round(kv.num_used_blocks / kv.num_blocks, 4) if kv.num_blocks else 0.0,
        },
        "adapters": (
            None
            if a is None
            else {
                "active": a.num_active,
                "pinned": a.num_pinned,
                "host": a.num_host,
                "loading": a.num_loading,
                "failed": a.num_failed,
                "hot": list(a.active_ids[:MAX_HOT_ADAPTERS]),
            }
        ),
    }
