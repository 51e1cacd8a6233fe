"""Tenant LoRA adapters over HTTP, behind the tenant's own credential.

    POST   /v1/adapters          multipart: `name`, optional `base_model`, and the files
                                 `adapter_config.json` + `adapter_model.safetensors`, or
                                 one `archive` (.tar.gz / .zip)      -> 201 adapter
    GET    /v1/adapters          the caller's adapters                -> {"data": [adapter]}
    GET    /v1/adapters/{name}   one of them, with all its versions   -> adapter + versions
    DELETE /v1/adapters/{name}   delete it (every version) and files  -> adapter

An adapter is `{"id", "object": "adapter", "name", "version", "base_model", "status",
"rank", "target_modules", "size_bytes", "created_at", "report"}`: GET and the list show
each name's current (routable) version; a new upload of a name makes its next version,
rolled out over the current one (`adapter:<tenant>/<name>` in `/admin/rollouts`). POST
answers once the smoke test has run, with status `ready` or `failed` (and the report
saying why). Errors in OpenAI's shape: 400 a bad upload (the message names the problem),
404 an unknown name or another tenant's, 409 `adapter_exists` (the newest version still
validating, a rollout of the name running, or a concurrent upload of the same version),
413 `adapter_too_large`. The file parts are spooled to disk
by the multipart parser and copied in chunks; the body-size limit middleware applies
first, so `TENANTSERVE_MAX_BODY_BYTES` must be above `TENANTSERVE_MAX_ADAPTER_BYTES`.
Uploads and deletions are recorded in the audit log, with the tenant as the actor.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from tenantserve.audit import actions
from tenantserve.audit.recorder import AuditRecorder, NullRecorder, tenant_actor
from tenantserve.gateway.auth import Authenticator
from tenantserve.gateway.errors import ApiError
from tenantserve.registry.adapter_service import AdapterService, UploadPart
from tenantserve.registry.adapters import Adapter, AdapterExistsError, AdapterTooLargeError
from tenantserve.tenancy.model import TenantContext

MAX_FORM_FILES = 4
MAX_FORM_FIELDS = 4
MAX_TEXT_FIELD_BYTES = 4096


def adapter_json(a: Adapter) -> dict[str, Any]:
    """The adapter as the tenant sees it (no storage locations)."""
    return {
        "id": a.id,
        "object": "adapter",
        "name": a.name,
        "version": a.version,
        "base_model": a.base_model,
        "status": a.status.value,
        "rank": a.rank,
        "target_modules": list(a.target_modules),
        "size_bytes": a.size_bytes,
        "created_at": int(a.created_at.timestamp()),
        "report": a.report,
    }


def version_json(a: Adapter) -> dict[str, Any]:
    """One version of an adapter, in `GET /v1/adapters/{name}`'s `versions`."""
    return {
        "id": a.id,
        "version": a.version,
        "status": a.status.value,
        "created_at": int(a.created_at.timestamp()),
        "superseded_at": int(a.superseded_at.timestamp()) if a.superseded_at else None,
        "report": a.report,
    }


class AdapterRoutes:
    """Handlers of `/v1/adapters...`; each authenticates the tenant first."""

    def __init__(
        self, auth: Authenticator, service: AdapterService, audit: AuditRecorder | None = None
    ) -> None:
        self.auth = auth
        self.service = service
        self.audit = audit if audit is not None else NullRecorder()

    def install(self, app: FastAPI) -> None:
        """Add the adapter routes to `app`."""
        app.add_api_route("/v1/adapters", self.upload, methods=["POST"])
        app.add_api_route("/v1/adapters", self.list_adapters, methods=["GET"])
        app.add_api_route("/v1/adapters/{name}", self.get_adapter, methods=["GET"])
        app.add_api_route("/v1/adapters/{name}", self.delete_adapter, methods=["DELETE"])

    async def upload(self, request: Request) -> JSONResponse:
        ctx = await self._tenant(request)
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(400, "upload the adapter as multipart/form-data")
        form = await request.form(
            max_files=MAX_FORM_FILES,
            max_fields=MAX_FORM_FIELDS,
            max_part_size=MAX_TEXT_FIELD_BYTES,
        )
        try:
            name = form.get("name")
            base_model = form.get("base_model")
            if not isinstance(name, str):
                raise ApiError(400, "the form field `name` is required", param="name")
            if base_model is not None and not isinstance(base_model, str):
                raise ApiError(400, "the form field `base_model` is text", param="base_model")
            parts = [
                UploadPart(field, value.filename, value.file)
                for field, value in form.multi_items()
                if isinstance(value, UploadFile)
            ]
            adapter = await self.service.upload(ctx, name, parts, base_model=base_model)
        except AdapterExistsError as e:
            raise ApiError(409, str(e), code="adapter_exists", param="name") from e
        except AdapterTooLargeError as e:
            raise ApiError(413, str(e), code="adapter_too_large") from e
        finally:
            await form.close()
        out = adapter_json(adapter)
        await self._record(ctx, actions.adapter_changed("adapter.upload", out))
        return JSONResponse(out, status_code=201)

    async def list_adapters(self, request: Request) -> dict[str, Any]:
        ctx = await self._tenant(request)
        adapters = await self.service.list(ctx)
        return {"object": "list", "data": [adapter_json(a) for a in adapters]}

    async def get_adapter(self, request: Request, name: str) -> dict[str, Any]:
        ctx = await self._tenant(request)
        current = await self.service.get(ctx, name)
        versions = await self.service.versions(ctx, name)
        return {**adapter_json(current), "versions": [version_json(v) for v in versions]}

    async def delete_adapter(self, request: Request, name: str) -> dict[str, Any]:
        ctx = await self._tenant(request)
        out = adapter_json(await self.service.delete(ctx, name))
        await self._record(ctx, actions.adapter_changed("adapter.delete", out))
        return out

    async def _record(self, ctx: TenantContext, action: actions.Action) -> None:
        await self.audit.record(tenant_actor(ctx.tenant_id), *action)

    async def _tenant(self, request: Request) -> TenantContext:
        return await self.auth.authenticate(request.headers.get("authorization"))
