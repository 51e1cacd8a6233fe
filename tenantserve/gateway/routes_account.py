"""`AccountRoutes`: what a tenant may see and manage of its own account.

    GET    /v1/me              the tenant (tier, region, limits), the credential in use,
                               and each quota with what is used of it this period
    GET    /v1/keys            the tenant's API keys (prefixes, never secrets)
    POST   /v1/keys            a new key; its plaintext is in this answer only
    DELETE /v1/keys/{key_id}   revoke one of the tenant's keys

Keys are managed with an unscoped credential only (a key limited to some models, or a
JWT, gets 403): a scoped key handed to a service must not mint itself a wider one. Any
other tenant's key id is 404, as if it did not exist. Key changes are written to the
audit log with the tenant as the actor.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tenantserve.admission.quota_ledger import QuotaLedger
from tenantserve.audit import actions
from tenantserve.audit.recorder import AuditRecorder, NullRecorder, tenant_actor
from tenantserve.errors import PermissionDeniedError
from tenantserve.gateway.auth import Authenticator
from tenantserve.gateway.errors import ApiError, parse_body
from tenantserve.gateway.routes_admin import KeyCreate
from tenantserve.tenancy.model import TenantContext
from tenantserve.tenancy.service import TenancyService
from tenantserve.tenancy.views import key_json, tenant_json


class AccountRoutes:
    """Handlers of `/v1/me` and `/v1/keys`; each authenticates the tenant first."""

    def __init__(
        self,
        tenancy: TenancyService,
        auth: Authenticator,
        quota_ledger: QuotaLedger,
        audit: AuditRecorder | None = None,
    ) -> None:
        self.tenancy = tenancy
        self.auth = auth
        self.quota_ledger = quota_ledger
        self.audit = audit if audit is not None else NullRecorder()

    def install(self, app: FastAPI) -> None:
        """Add the account routes to `app`."""
        app.add_api_route("/v1/me", self.me, methods=["GET"])
        app.add_api_route("/v1/keys", self.list_keys, methods=["GET"])
        app.add_api_route("/v1/keys", self.create_key, methods=["POST"])
        app.add_api_route("/v1/keys/{key_id}", self.revoke_key, methods=["DELETE"])

    async def me(self, request: Request) -> dict[str, Any]:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        out = tenant_json(await self.tenancy.get_tenant(ctx.tenant_id))
        used = await self.quota_ledger.usage(ctx.tenant_id, ctx.quotas, datetime.now(UTC))
        for quota, shown in zip(ctx.quotas, out["quotas"], strict=True):
            shown["used"] = used.get(quota.usage_key, 0)
        out["object"] = "tenant"
        out["credential"] = {
            "type": "api_key" if ctx.key_id is not None else "jwt",
            "key_id": ctx.key_id,
            "subject": ctx.subject,
            "allowed_models": sorted(ctx.allowed_models),
        }
        return out

    async def list_keys(self, request: Request) -> dict[str, Any]:
        ctx = await self._key_manager(request)
        keys = await self.tenancy.list_keys(ctx.tenant_id)
        return {"object": "list", "data": [key_json(k) for k in keys]}

    async def create_key(self, request: Request) -> JSONResponse:
        ctx = await self._key_manager(request)
        body = await parse_body(request, KeyCreate)
        new = await self.tenancy.create_key(ctx.tenant_id, body.expires_days, body.allowed_models)
        await self.audit.record(
            tenant_actor(ctx.tenant_id), *actions.key_created(key_json(new.key))
        )
        return JSONResponse(key_json(new.key, new.plaintext), status_code=201)

    async def revoke_key(self, request: Request, key_id: str) -> dict[str, Any]:
        ctx = await self._key_manager(request)
        owned = {k.id for k in await self.tenancy.list_keys(ctx.tenant_id)}
        if key_id not in owned:
            raise ApiError(
                404, f"No API key `{key_id}` found.", code="key_not_found", param="key_id"
            )
        key = await self.tenancy.revoke_key(key_id)
        self.auth.invalidate_key(key.id)
        out = key_json(key)
        await self.audit.record(tenant_actor(ctx.tenant_id), *actions.key_revoked(out))
        return out

    async def _key_manager(self, request: Request) -> TenantContext:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        if ctx.key_id is None or ctx.allowed_models:
            raise PermissionDeniedError(
                "Managing API keys needs an unscoped API key of the tenant; this credential "
                "is a JWT or a key limited to some models."
            )
        return ctx
