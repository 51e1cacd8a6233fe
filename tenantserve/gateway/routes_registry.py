"""The registry's admin API: the model catalog, behind the operator's Bearer admin token.

    POST /admin/models                     {"path", "name", "version", "format"?,
                                            "quantization"?, "runtimes"?, "min_memory_bytes"?,
                                            "device"?, "status"?, "scope"?}
                                           -> 201 version (200: identical, already there)
    GET  /admin/models                     every version            -> {"data": [version]}
    GET  /admin/models/{name}              the model's versions     -> {"data": [version]}
    POST /admin/models/{name}/{version}/deprecate  {"end_date", "replacement"?} -> version
    POST /admin/models/{name}/{version}/archive    {"replacement"?}            -> version

`path` is a directory (or file) on the server's file system; its files are streamed into
the artifact store. JSON as `registry/views.py` writes it (the CLI prints the same). A
missing or wrong token is 401; bad fields, an immutable version registered with other
content, and refused transitions are 400; unknown models 404. Registrations, deprecations
and archivals are recorded in the audit log once done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tenantserve.audit import actions
from tenantserve.audit.recorder import ADMIN_ACTOR, AuditRecorder, NullRecorder
from tenantserve.gateway.auth import check_admin
from tenantserve.gateway.errors import parse_body
from tenantserve.registry.service import DEFAULT_RUNTIMES, RegistryService
from tenantserve.registry.views import version_json


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VersionRegister(_Strict):
    path: str
    name: str
    version: str
    format: str | None = None
    quantization: str | None = None
    runtimes: list[str] = Field(default_factory=lambda: list(DEFAULT_RUNTIMES))
    min_memory_bytes: Annotated[int, Field(ge=0)] | None = None
    device: str = "any"
    status: str = "active"
    scope: str = "public"


class VersionDeprecate(_Strict):
    end_date: str
    replacement: str | None = None


class VersionArchive(_Strict):
    replacement: str | None = None


class RegistryRoutes:
    """Handlers of `/admin/models...`; each checks the admin token first."""

    def __init__(
        self, registry: RegistryService, admin_token: str, audit: AuditRecorder | None = None
    ) -> None:
        self.registry = registry
        self.audit = audit if audit is not None else NullRecorder()
        self._token = admin_token.encode()

    def install(self, app: FastAPI) -> None:
        """Add the registry's admin routes to `app`."""
        app.add_api_route("/admin/models", self.register, methods=["POST"])
        app.add_api_route("/admin/models", self.list_versions, methods=["GET"])
        app.add_api_route("/admin/models/{name}", self.model_versions, methods=["GET"])
        app.add_api_route(
            "/admin/models/{name}/{version}/deprecate", self.deprecate, methods=["POST"]
        )
        app.add_api_route("/admin/models/{name}/{version}/archive", self.archive, methods=["POST"])

    async def register(self, request: Request) -> JSONResponse:
        self._check(request)
        body = await parse_body(request, VersionRegister)
        result = await self.registry.register(
            Path(body.path),
            body.name,
            body.version,
            format=body.format,
            quantization=body.quantization,
            runtimes=body.runtimes,
            min_memory_bytes=body.min_memory_bytes,
            device=body.device,
            status=body.status,
            scope=body.scope,
        )
        out = version_json(result.version)
        await self.audit.record(ADMIN_ACTOR, *actions.model_registered(out, result.created))
        return JSONResponse(out, status_code=201 if result.created else 200)

    async def list_versions(self, request: Request) -> dict[str, Any]:
        self._check(request)
        versions = await self.registry.list()
        return {"object": "list", "data": [version_json(v) for v in versions]}

    async def model_versions(self, request: Request, name: str) -> dict[str, Any]:
        self._check(request)
        versions = await self.registry.versions(name)
        return {"object": "list", "data": [version_json(v) for v in versions]}

    async def deprecate(self, request: Request, name: str, version: str) -> dict[str, Any]:
        self._check(request)
        body = await parse_body(request, VersionDeprecate)
        ref = f"{name}@{version}"
        before = await actions.state_before(self.registry.get(ref), version_json)
        after = version_json(await self.registry.deprecate(ref, body.end_date, body.replacement))
        await self.audit.record(ADMIN_ACTOR, *actions.model_deprecated(before, after))
        return after

    async def archive(self, request: Request, name: str, version: str) -> dict[str, Any]:
        self._check(request)
        body = await parse_body(request, VersionArchive)
        ref = f"{name}@{version}"
        before = await actions.state_before(self.registry.get(ref), version_json)
        after = version_json(await self.registry.archive(ref, body.replacement))
        await self.audit.record(ADMIN_ACTOR, *actions.model_archived(before, after))
        return after

    def _check(self, request: Request) -> None:
        """AuthenticationError (401) unless the request carries the admin token."""
        check_admin(request.headers.get("authorization"), self._token)
