"""Eval sets and runs over HTTP: the operator's behind the admin token, a tenant's own
adapter set behind its credential.

    POST   /admin/evals/sets              {"model": "name[@version]", "set": {...}}
                                          -> 201 eval set (replaces the target's set of
                                          that name)
    GET    /admin/evals/sets[?model=]     -> {"data": [eval set]}
    DELETE /admin/evals/sets?target=&name=  -> {"deleted": true}
    POST   /admin/evals/run               {"model": "name[@version]"} -> the run: results
                                          and the gate's verdict (in process, through the
                                          pool serving the version)
    GET    /admin/evals/results?model=name[@version]  -> {"data": [result]}, newest first

    POST   /v1/adapters/{name}/eval-set   the set as JSON -> 201 {"eval_set", "result"}
                                          (the current version evaluated, if any)
    GET    /v1/adapters/{name}/eval-set   -> {"eval_set" (with items), "results"}
    DELETE /v1/adapters/{name}/eval-set   -> {"deleted": true}

The set's format and rules are `registry/evals.py`'s. A bad set is a 400 naming the
problem; an unknown model, or an adapter set the caller does not have (another tenant's
included), is a 404. Every change and run is recorded in the audit log once done.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tenantserve.audit.recorder import ADMIN_ACTOR, AuditRecorder, NullRecorder, tenant_actor
from tenantserve.gateway.auth import Authenticator, check_admin
from tenantserve.gateway.errors import ApiError
from tenantserve.registry.eval_service import EvalService
from tenantserve.registry.eval_views import eval_result_json, eval_run_json, eval_set_json


class EvalRoutes:
    """Handlers of `/admin/evals...` and `/v1/adapters/{name}/eval-set`."""

    def __init__(
        self,
        service: EvalService,
        auth: Authenticator,
        admin_token: str,
        audit: AuditRecorder | None = None,
    ) -> None:
        self.service = service
        self.auth = auth
        self._token = admin_token.encode()
        self.audit = audit if audit is not None else NullRecorder()

    def install(self, app: FastAPI) -> None:
        """Add the eval routes to `app`."""
        app.add_api_route("/admin/evals/sets", self.put_set, methods=["POST"])
        app.add_api_route("/admin/evals/sets", self.list_sets, methods=["GET"])
        app.add_api_route("/admin/evals/sets", self.remove_set, methods=["DELETE"])
        app.add_api_route("/admin/evals/run", self.run, methods=["POST"])
        app.add_api_route("/admin/evals/results", self.results, methods=["GET"])
        path = "/v1/adapters/{name}/eval-set"
        app.add_api_route(path, self.put_adapter_set, methods=["POST"])
        app.add_api_route(path, self.get_adapter_set, methods=["GET"])
        app.add_api_route(path, self.remove_adapter_set, methods=["DELETE"])

    async def put_set(self, request: Request) -> JSONResponse:
        self._check(request)
        body = await _json_object(request)
        stored = await self.service.put_model_set(_text(body, "model"), body.get("set"))
        out = eval_set_json(stored)
        await self.audit.record(ADMIN_ACTOR, "eval_set.put", stored.target, out)
        return JSONResponse(out, status_code=201)

    async def list_sets(self, request: Request, model: str | None = None) -> dict[str, Any]:
        self._check(request)
        found = await self.service.model_sets(model)
        return {"object": "list", "data": [eval_set_json(s) for s in found]}

    async def remove_set(
        self, request: Request, target: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        self._check(request)  # before the parameters: nobody learns them without the token
        target, name = _required(target, "target"), _required(name, "name")
        await self.service.remove_model_set(target, name)
        await self.audit.record(ADMIN_ACTOR, "eval_set.remove", target, {"name": name})
        return {"deleted": True, "target": target, "name": name}

    async def run(self, request: Request) -> dict[str, Any]:
        self._check(request)
        body = await _json_object(request)
        out = eval_run_json(await self.service.run(_text(body, "model")))
        facts = {"passed": out["passed"], "verdict": out["verdict"]}
        await self.audit.record(ADMIN_ACTOR, "eval.run", out["ref"], facts)
        return out

    async def results(self, request: Request, model: str | None = None) -> dict[str, Any]:
        self._check(request)
        found = await self.service.results(_required(model, "model"))
        return {"object": "list", "data": [eval_result_json(r) for r in found]}

    async def put_adapter_set(self, request: Request, name: str) -> JSONResponse:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        body = await _json_object(request)
        stored, result = await self.service.put_adapter_set(ctx, name, body)
        actor = tenant_actor(ctx.tenant_id)
        await self.audit.record(actor, "adapter_eval_set.put", stored.target, {"name": name})
        payload = {
            "eval_set": eval_set_json(stored),
            "result": eval_result_json(result) if result is not None else None,
        }
        return JSONResponse(payload, status_code=201)

    async def get_adapter_set(self, request: Request, name: str) -> dict[str, Any]:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        stored, results = await self.service.adapter_set(ctx, name)
        return {
            "eval_set": eval_set_json(stored, items=True),
            "results": [eval_result_json(r) for r in results],
        }

    async def remove_adapter_set(self, request: Request, name: str) -> dict[str, Any]:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        await self.service.remove_adapter_set(ctx, name)
        target = f"adapter:{ctx.tenant_id}/{name}"
        await self.audit.record(tenant_actor(ctx.tenant_id), "adapter_eval_set.remove", target)
        return {"deleted": True}

    def _check(self, request: Request) -> None:
        check_admin(request.headers.get("authorization"), self._token)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as e:
        raise ApiError(400, f"the body is not valid JSON ({e})") from e
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _required(value: str | None, param: str) -> str:
    if not value:
        raise ApiError(400, f"the query parameter {param} is required", param=param)
    return value


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"`{field}` is required (a model name or name@version)", param=field)
    return value
