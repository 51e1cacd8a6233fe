"""The rollout admin API, behind the operator's Bearer admin token.

    POST /admin/rollouts                    {"model", "candidate", "shadow_percent"?,
                                             "canary_steps"?, "step_seconds"?,
                                             "min_requests"?, "error_rate_margin"?,
                                             "p95_latency_margin"?, "max_divergence_rate"?,
                                             "require_golden_set"?, "reason"?}
                                            -> 201 rollout
    GET  /admin/rollouts                    the running rollouts    -> {"data": [rollout]}
    GET  /admin/rollouts/{model}            its running (else latest) rollout -> rollout
    POST /admin/rollouts/{model}/promote    {"reason"?} (or no body)  next step now       -> rollout
    POST /admin/rollouts/{model}/rollback   {"reason"?}  back to stable now  -> rollout

JSON as `registry/rollout_views.py` writes it (the CLI prints the same). A missing or wrong
token is 401; bad fields, a second running rollout of one model and refused steps are
400; unknown models, versions and rollouts 404. Starts, promotions and rollbacks are
recorded in the audit log once done (with the step moved from and to).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tenantserve.audit import actions
from tenantserve.audit.recorder import ADMIN_ACTOR, AuditRecorder, NullRecorder
from tenantserve.gateway.auth import check_admin
from tenantserve.gateway.errors import parse_body, parse_json
from tenantserve.registry.rollout import (
    DEFAULT_CANARY_STEPS,
    DEFAULT_ERROR_RATE_MARGIN,
    DEFAULT_MIN_REQUESTS,
    DEFAULT_P95_LATENCY_MARGIN,
    DEFAULT_SHADOW_PERCENT,
    DEFAULT_STEP_SECONDS,
)
from tenantserve.registry.rollout_service import RolloutService
from tenantserve.registry.rollout_views import rollout_json


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RolloutStart(_Strict):
    model: str
    candidate: str
    shadow_percent: float = DEFAULT_SHADOW_PERCENT
    canary_steps: list[float] = Field(default_factory=lambda: list(DEFAULT_CANARY_STEPS))
    step_seconds: Annotated[float, Field(ge=0)] = DEFAULT_STEP_SECONDS
    min_requests: Annotated[int, Field(ge=1)] = DEFAULT_MIN_REQUESTS
    error_rate_margin: float = DEFAULT_ERROR_RATE_MARGIN
    p95_latency_margin: float = DEFAULT_P95_LATENCY_MARGIN
    max_divergence_rate: float | None = None
    require_golden_set: bool = False
    reason: str | None = None


class RolloutStep(_Strict):
    reason: str | None = None


class RolloutRoutes:
    """Handlers of `/admin/rollouts...`; each checks the admin token first."""

    def __init__(
        self, rollouts: RolloutService, admin_token: str, audit: AuditRecorder | None = None
    ) -> None:
        self.rollouts = rollouts
        self.audit = audit if audit is not None else NullRecorder()
        self._token = admin_token.encode()

    def install(self, app: FastAPI) -> None:
        """Add the rollout admin routes to `app`."""
        app.add_api_route("/admin/rollouts", self.start, methods=["POST"])
        app.add_api_route("/admin/rollouts", self.list_active, methods=["GET"])
        # `{model:path}`: an adapter's rollout key (`adapter:<tenant>/<name>`) has a slash.
        app.add_api_route("/admin/rollouts/{model:path}/promote", self.promote, methods=["POST"])
        app.add_api_route("/admin/rollouts/{model:path}/rollback", self.rollback, methods=["POST"])
        app.add_api_route("/admin/rollouts/{model:path}", self.status, methods=["GET"])

    async def start(self, request: Request) -> JSONResponse:
        self._check(request)
        body = await parse_body(request, RolloutStart)
        options = body.model_dump(exclude={"model", "candidate"})
        rollout = await self.rollouts.start(body.model, body.candidate, **options)
        out = rollout_json(rollout, self.rollouts.stats(rollout.model))
        await self.audit.record(ADMIN_ACTOR, *actions.rollout_started(out, body.reason))
        return JSONResponse(out, 201)

    async def list_active(self, request: Request) -> dict[str, Any]:
        self._check(request)
        running = await self.rollouts.list_active()
        return {
            "object": "list",
            "data": [rollout_json(r, self.rollouts.stats(r.model)) for r in running],
        }

    async def status(self, request: Request, model: str) -> dict[str, Any]:
        self._check(request)
        rollout = await self.rollouts.status(model)
        stats = self.rollouts.stats(model) if rollout.is_active else None
        return rollout_json(rollout, stats)

    async def promote(self, request: Request, model: str) -> dict[str, Any]:
        self._check(request)
        body = await _step_body(request)
        before = await actions.state_before(self.rollouts.status(model), rollout_json)
        rollout = await self.rollouts.promote(model, body.reason)
        out = rollout_json(rollout, self.rollouts.stats(model) if rollout.is_active else None)
        step = actions.rollout_stepped("rollout.promote", before, out, body.reason)
        await self.audit.record(ADMIN_ACTOR, *step)
        return out

    async def rollback(self, request: Request, model: str) -> dict[str, Any]:
        self._check(request)
        body = await _step_body(request)
        before = await actions.state_before(self.rollouts.status(model), rollout_json)
        out = rollout_json(await self.rollouts.rollback(model, body.reason))
        step = actions.rollout_stepped("rollout.rollback", before, out, body.reason)
        await self.audit.record(ADMIN_ACTOR, *step)
        return out

    def _check(self, request: Request) -> None:
        """AuthenticationError (401) unless the request carries the admin token."""
        check_admin(request.headers.get("authorization"), self._token)


async def _step_body(request: Request) -> RolloutStep:
    """The optional `{"reason"}` of promote / rollback (an empty body is no reason)."""
    raw = await request.body()
    return parse_json(raw, RolloutStep) if raw.strip() else RolloutStep()
