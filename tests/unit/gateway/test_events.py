"""EventLog: bounded, oldest first, stamped; `GET /admin/events` behind the admin token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import httpx
import pytest
from fastapi import FastAPI

from tenantserve.errors import ConfigError
from tenantserve.gateway.auth import Authenticator
from tenantserve.gateway.errors import install_error_handlers
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.routes_admin import AdminRoutes
from tenantserve.tenancy.service import TenancyService

ADMIN_TOKEN = "tsadm-test-token"


@asynccontextmanager
async def admin_client(events: EventLog, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """Only the admin routes, in process; `/admin/events` reads nothing but the log."""
    app = FastAPI()
    tenancy = cast(TenancyService, None)
    AdminRoutes(tenancy, Authenticator(tenancy), ADMIN_TOKEN, events).install(app)
    install_error_handlers(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        yield client


def test_the_log_keeps_only_the_newest_events_oldest_first() -> None:
    times = iter(range(100, 200))
    log = EventLog(max_events=3, clock=lambda: float(next(times)))
    for i in range(5):
        log.append("noisy_neighbor", f"t{i}", {"i": i})
    kept = log.events()
    assert len(log) == 3
    assert [e.tenant_id for e in kept] == ["t2", "t3", "t4"]
    assert [e.created_at_s for e in kept] == [102.0, 103.0, 104.0]
    assert [e.id for e in kept] == ["evt_3", "evt_4", "evt_5"]
    assert kept[0].to_json() == {
        "object": "event",
        "id": "evt_3",
        "created_at": 102.0,
        "kind": "noisy_neighbor",
        "tenant_id": "t2",
        "details": {"i": 2},
    }


def test_a_log_must_hold_at_least_one_event() -> None:
    with pytest.raises(ConfigError):
        EventLog(max_events=0)


async def test_admin_events_lists_the_log_for_the_admin_token() -> None:
    log = EventLog()
    log.append("noisy_neighbor", "hog", {"action": "demote"})
    async with admin_client(log, ADMIN_TOKEN) as admin:
        r = await admin.get("/admin/events")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    assert [(e["kind"], e["tenant_id"], e["details"]) for e in body["data"]] == [
        ("noisy_neighbor", "hog", {"action": "demote"})
    ]


@pytest.mark.parametrize("token", ["", "ts-abc123-notadmin", ADMIN_TOKEN + "x"])
async def test_admin_events_refuses_anything_but_the_admin_token(token: str) -> None:
    log = EventLog()
    log.append("noisy_neighbor", "hog")
    async with admin_client(log, token) as admin:
        r = await admin.get("/admin/events")
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert "hog" not in r.text
