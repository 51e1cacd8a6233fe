"""The admin API: tenants, their keys and the operator event log, behind the operator's
Bearer admin token.

    POST   /admin/tenants              {"name", "tier", "region"}        -> 201 tenant
    GET    /admin/tenants                                                -> {"data": [tenant]}
    GET    /admin/tenants/{id}                                           -> tenant
    PATCH  /admin/tenants/{id}         {"name"?, "tier"?, "region"?, "status"?, "limits"?,
                                        "quotas"?: [{"metric", "period", "limit",
                                                     "enforcement"}],
                                        "log_content"?: bool}           -> tenant
    POST   /admin/tenants/{id}/move    {"pool": name | null, "drain_timeout_s"?}
                                       to a dedicated pool (null: back to shared),
                                       warmed, switched, drained (`tenant_move.py`)
                                                                        -> move report
    POST   /admin/tenants/{id}/keys    {"expires_days"?, "allowed_models"?} -> 201 key + `key`
    GET    /admin/tenants/{id}/keys                                      -> {"data": [key]}
    DELETE /admin/keys/{key_id}        revoke (idempotent)               -> key
    GET    /admin/events               operator events, oldest first     -> {"data": [event]}

JSON as `tenancy/views.py` writes it (the CLI prints the same). A missing or wrong token is
401 (tenant keys included); bad fields are 400, unknown ids 404. `quotas` replaces the
tenant's whole list (`[]` removes them). Changes that affect authentication (status,
tier, region, limits, quotas, revocation) drop the tenant's or key's cached credentials
at once. Every change (and every read of the event log) is recorded in the audit log
after it succeeded, with what changed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tenantserve.audit import actions
from tenantserve.audit.recorder import ADMIN_ACTOR, AuditRecorder, NullRecorder
from tenantserve.gateway.auth import Authenticator, check_admin
from tenantserve.gateway.errors import parse_body
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.tenant_move import DEFAULT_DRAIN_TIMEOUT_S, TenantMover
from tenantserve.tenancy.service import TenancyService
from tenantserve.tenancy.views import key_json, tenant_json


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantCreate(_Strict):
    name: str
    tier: str
    region: str


class TenantPatch(_Strict):
    name: str | None = None
    tier: str | None = None
    region: str | None = None
    status: str | None = None
    # A null limit resets it to the tier's default.
    limits: dict[str, int | None] | None = None
    # The whole new list; each item is checked by `Quota.from_dict` (400 naming the choices).
    quotas: list[dict[str, Any]] | None = None
    # Opt-in: the tenant's request records keep prompt and completion text.
    log_content: bool | None = None


class TenantMove(_Strict):
    pool: str | None
    drain_timeout_s: Annotated[float, Field(gt=0, le=3600)] = DEFAULT_DRAIN_TIMEOUT_S


class KeyCreate(_Strict):
    expires_days: Annotated[float, Field(gt=0)] | None = None
    allowed_models: list[str] = Field(default_factory=list)


class AdminRoutes:
    """Handlers of `/admin/...`; each checks the admin token first."""

    def __init__(
        self,
        tenancy: TenancyService,
        auth: Authenticator,
        admin_token: str,
        events: EventLog,
        audit: AuditRecorder | None = None,
        mover: TenantMover | None = None,
    ) -> None:
        self.tenancy = tenancy
        self.auth = auth
        self.events = events
        self.mover = mover
        self.audit = audit if audit is not None else NullRecorder()
        self._token = admin_token.encode()

    def install(self, app: FastAPI) -> None:
        """Add the admin routes to `app`."""
        app.add_api_route("/admin/tenants", self.create_tenant, methods=["POST"])
        app.add_api_route("/admin/tenants", self.list_tenants, methods=["GET"])
        app.add_api_route("/admin/tenants/{tenant_id}", self.get_tenant, methods=["GET"])
        app.add_api_route("/admin/tenants/{tenant_id}", self.update_tenant, methods=["PATCH"])
        if self.mover is not None:
            app.add_api_route("/admin/tenants/{tenant_id}/move", self.move, methods=["POST"])
        app.add_api_route("/admin/tenants/{tenant_id}/keys", self.create_key, methods=["POST"])
        app.add_api_route("/admin/tenants/{tenant_id}/keys", self.list_keys, methods=["GET"])
        app.add_api_route("/admin/keys/{key_id}", self.revoke_key, methods=["DELETE"])
        app.add_api_route("/admin/events", self.list_events, methods=["GET"])

    async def create_tenant(self, request: Request) -> JSONResponse:
        self._check(request)
        body = await parse_body(request, TenantCreate)
        tenant = await self.tenancy.create_tenant(body.name, body.tier, body.region)
        out = tenant_json(tenant)
        await self.audit.record(ADMIN_ACTOR, *actions.tenant_created(out))
        return JSONResponse(out, status_code=201)

    async def list_tenants(self, request: Request) -> dict[str, Any]:
        self._check(request)
        tenants = await self.tenancy.list_tenants()
        return {"object": "list", "data": [tenant_json(t) for t in tenants]}

    async def get_tenant(self, request: Request, tenant_id: str) -> dict[str, Any]:
        self._check(request)
        return tenant_json(await self.tenancy.get_tenant(tenant_id))

    async def update_tenant(self, request: Request, tenant_id: str) -> dict[str, Any]:
        self._check(request)
        body = await parse_body(request, TenantPatch)
        before = await actions.state_before(self.tenancy.get_tenant(tenant_id), tenant_json)
        tenant = await self.tenancy.update_tenant(
            tenant_id,
            name=body.name,
            tier=body.tier,
            region=body.region,
            status=body.status,
            limits=body.limits,
            quotas=body.quotas,
            log_content=body.log_content,
        )
        self.auth.invalidate_tenant(tenant.id)
        after = tenant_json(tenant)
        await self.audit.record(ADMIN_ACTOR, *actions.tenant_updated(before, after))
        return after

    async def move(self, request: Request, tenant_id: str) -> dict[str, Any]:
        self._check(request)
        body = await parse_body(request, TenantMove)
        assert self.mover is not None
        report = await self.mover.move(tenant_id, body.pool, ADMIN_ACTOR, body.drain_timeout_s)
        return report.to_json()

    async def create_key(self, request: Request, tenant_id: str) -> JSONResponse:
        self._check(request)
        body = await parse_body(request, KeyCreate)
        new = await self.tenancy.create_key(tenant_id, body.expires_days, body.allowed_models)
        await self.audit.record(ADMIN_ACTOR, *actions.key_created(key_json(new.key)))
        return JSONResponse(key_json(new.key, new.plaintext), status_code=201)

    async def list_keys(self, request: Request, tenant_id: str) -> dict[str, Any]:
        self._check(request)
        keys = await self.tenancy.list_keys(tenant_id)
        return {"object": "list", "data": [key_json(k) for k in keys]}

    async def revoke_key(self, request: Request, key_id: str) -> dict[str, Any]:
        self._check(request)
        key = await self.tenancy.revoke_key(key_id)
        self.auth.invalidate_key(key.id)
        out = key_json(key)
        await self.audit.record(ADMIN_ACTOR, *actions.key_revoked(out))
        return out

    async def list_events(self, request: Request) -> dict[str, Any]:
        self._check(request)
        events = [e.to_json() for e in self.events.events()]
        await self.audit.record(ADMIN_ACTOR, *actions.events_read(len(events)))
        return {"object": "list", "data": events}

    def _check(self, request: Request) -> None:
        """AuthenticationError (401) unless the request carries the admin token."""
        check_admin(request.headers.get("authorization"), self._token)
