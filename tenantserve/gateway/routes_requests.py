"""`RequestRoutes`: request records and SLOs, for the tenant (its own only) and operators.

    GET /v1/requests?start&end&status&limit&cursor     the caller's records, newest first
    GET /v1/requests/{id}                              one of them; any other id is 404
    GET /v1/slo                                        the caller's SLO status
    GET /admin/requests?tenant&start&end&status&limit&cursor    anyone's — admin token
    GET /admin/requests/{id}                           any record — admin token
    GET /admin/requests/{id}/debug                     the request's story (`request_story.py`)
    GET /admin/slo?tenant                              every tenant's SLO status

Every operator read is written to the audit log before it answers (`requests.read`,
`slo.read`; a failing audit write fails the read). `status` is completed,
cancelled, error or rejected; `limit` 1–1000 (default 50); `next_cursor` continues.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from tenantserve.audit.recorder import ADMIN_ACTOR, AuditRecorder
from tenantserve.errors import InvalidRequestError
from tenantserve.gateway.auth import Authenticator, check_admin
from tenantserve.gateway.errors import ApiError
from tenantserve.gateway.routes_usage import parse_time
from tenantserve.observability.record_store import STATUSES, RecordPage, RequestRecordStore
from tenantserve.observability.request_story import build_story, usage_event_of
from tenantserve.observability.slo_monitor import SloMonitor

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
READ_ACTION = "requests.read"
SLO_READ_ACTION = "slo.read"


def _not_found(request_id: str) -> ApiError:
    return ApiError(
        404, f"No request `{request_id}` found.", code="request_not_found", param="request_id"
    )


class RequestRoutes:
    def __init__(
        self,
        auth: Authenticator,
        store: RequestRecordStore,
        slo: SloMonitor | None,
        admin_token: str,
        audit: AuditRecorder | None = None,
    ) -> None:
        self.auth = auth
        self.store = store
        self.slo = slo
        self.audit = audit
        self._token = admin_token.encode()

    def install(self, app: FastAPI) -> None:
        app.add_api_route("/v1/requests", self.tenant_list, methods=["GET"])
        app.add_api_route("/v1/requests/{request_id}", self.tenant_get, methods=["GET"])
        app.add_api_route("/v1/slo", self.tenant_slo, methods=["GET"])
        app.add_api_route("/admin/requests", self.admin_list, methods=["GET"])
        app.add_api_route("/admin/requests/{request_id}", self.admin_get, methods=["GET"])
        app.add_api_route("/admin/requests/{request_id}/debug", self.admin_debug, methods=["GET"])
        app.add_api_route("/admin/slo", self.admin_slo, methods=["GET"])

    async def tenant_list(
        self,
        request: Request,
        start: str | None = None,
        end: str | None = None,
        status: str | None = None,
        limit: str | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        return _page_json(await self._page(ctx.tenant_id, start, end, status, limit, cursor))

    async def tenant_get(self, request: Request, request_id: str) -> dict[str, Any]:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        record = await self.store.get(request_id, tenant_id=ctx.tenant_id)
        if record is None:  # another tenant's id too: never 403
            raise _not_found(request_id)
        return record

    async def tenant_slo(self, request: Request) -> dict[str, Any]:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        if self.slo is None:
            return {"object": "slo", "tenant_id": ctx.tenant_id, "tier": ctx.tier.value}
        reports = await self.slo.report(ctx.tenant_id)
        body: dict[str, Any] = reports[0] if reports else {"tenant_id": ctx.tenant_id}
        body.setdefault("tier", ctx.tier.value)
        body["events"] = self.slo.related_events(ctx.tenant_id)  # others' ids removed
        return body

    async def admin_list(
        self,
        request: Request,
        tenant: str | None = None,
        start: str | None = None,
        end: str | None = None,
        status: str | None = None,
        limit: str | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        self._check(request)
        page = await self._page(tenant or None, start, end, status, limit, cursor)
        filters = {k: v for k, v in (("start", start), ("end", end), ("status", status)) if v}
        details = {"records": len(page.data), **filters}
        await self._audit(tenant or "*", details)
        return _page_json(page)

    async def admin_get(self, request: Request, request_id: str) -> dict[str, Any]:
        self._check(request)
        record = await self.store.get(request_id)
        if record is None:
            raise _not_found(request_id)
        await self._audit(request_id, {"tenant_id": record["tenant_id"]})
        return record

    async def admin_debug(self, request: Request, request_id: str) -> dict[str, Any]:
        self._check(request)
        record = await self.store.get(request_id)
        if record is None:
            raise _not_found(request_id)
        await self._audit(request_id, {"tenant_id": record["tenant_id"], "view": "debug"})
        usage = await usage_event_of(self.store.engine, request_id)
        events = (
            self.slo.related_events(record["tenant_id"], redact_others=False)
            if self.slo is not None
            else []
        )
        return build_story(record, usage, events)

    async def admin_slo(self, request: Request, tenant: str | None = None) -> dict[str, Any]:
        self._check(request)
        data = await self.slo.report(tenant or None) if self.slo is not None else []
        await self._audit(tenant or "*", {"tenants": len(data)}, SLO_READ_ACTION)
        return {"object": "list", "data": data}

    async def _page(
        self,
        tenant_id: str | None,
        start: str | None,
        end: str | None,
        status: str | None,
        limit: str | None,
        cursor: str | None,
    ) -> RecordPage:
        t0 = parse_time(start, "start") if start else None
        t1 = parse_time(end, "end") if end else None
        if t0 is not None and t1 is not None and t1 <= t0:
            raise ApiError(400, "end must be after start", param="end")
        if status is not None and status not in STATUSES:
            raise ApiError(400, f"status must be one of {', '.join(STATUSES)}", param="status")
        try:
            n = DEFAULT_LIMIT if limit is None else int(limit)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_LIMIT:
            raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}", param="limit")
        try:
            return await self.store.page(tenant_id, t0, t1, status, n, cursor)
        except InvalidRequestError as e:
            raise ApiError(400, str(e), param="cursor") from None

    async def _audit(self, target: str, details: dict[str, Any], action: str = READ_ACTION) -> None:
        if self.audit is not None:
            await self.audit.record(ADMIN_ACTOR, action, target, details)

    def _check(self, request: Request) -> None:
        check_admin(request.headers.get("authorization"), self._token)


def _page_json(page: RecordPage) -> dict[str, Any]:
    return {
        "object": "list",
        "data": page.data,
        "has_more": page.next_cursor is not None,
        "next_cursor": page.next_cursor,
    }
