"""`UsageRoutes`: metered usage, for the tenant and for operators.

    GET /v1/usage?start&end&granularity     the caller's own buckets and total
    GET /admin/usage?tenant&start&end&granularity    any tenant's (or all) — admin token

`start` / `end` are ISO 8601 times or dates (UTC when no zone is given), or Unix
seconds; the default window ends now and starts an hour ago (minute), at the start of
the UTC month (hour, day) or year (month). `granularity` is
minute, hour (default), day or month. Buckets carry `input_tokens`,
`cached_input_tokens`, `output_tokens` (billable tokens), `requests`, `errors`,
`cancelled` and `engine_seconds`, per model and adapter; `total` sums them. Each operator
read is recorded in the audit log (`usage.read`, the tenant as the target).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request

from tenantserve.audit import actions
from tenantserve.audit.recorder import ADMIN_ACTOR, AuditRecorder, NullRecorder
from tenantserve.gateway.auth import Authenticator, check_admin
from tenantserve.gateway.errors import ApiError
from tenantserve.metering.report import Granularity, truncate
from tenantserve.metering.store import UsageStore

# The largest window a request may read, per granularity (bounded answers).
MAX_WINDOW = {
    Granularity.MINUTE: timedelta(days=2),
    Granularity.HOUR: timedelta(days=93),
    Granularity.DAY: timedelta(days=800),
    Granularity.MONTH: timedelta(days=3700),
}


def parse_time(value: str, param: str) -> datetime:
    """An ISO 8601 time or date (UTC unless it says otherwise) or Unix seconds."""
    text = value.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise ApiError(
            400, f"{param} must be an ISO 8601 time or date, or Unix seconds", param=param
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _default_start(now: datetime, g: Granularity) -> datetime:
    """The last hour by minute, this UTC month by hour or day, this year by month."""
    if g is Granularity.MINUTE:
        return truncate(now - timedelta(hours=1), g)
    if g is Granularity.MONTH:
        return truncate(now, Granularity.MONTH).replace(month=1)
    return truncate(now, Granularity.MONTH)


def usage_window(
    start: str | None, end: str | None, granularity: str | None
) -> tuple[datetime, datetime, Granularity]:
    """The validated (start, end, granularity) of a usage query."""
    try:
        g = Granularity(granularity or "hour")
    except ValueError:
        choices = ", ".join(x.value for x in Granularity)
        raise ApiError(400, f"granularity must be one of {choices}", param="granularity") from None
    now = datetime.now(UTC)
    t1 = parse_time(end, "end") if end else now
    t0 = parse_time(start, "start") if start else _default_start(now, g)
    if t1 <= t0:
        raise ApiError(400, "end must be after start", param="end")
    if t1 - t0 > MAX_WINDOW[g]:
        limit = MAX_WINDOW[g].days
        raise ApiError(
            400, f"a {g.value} usage window may span at most {limit} days", param="start"
        )
    return t0, t1, g


class UsageRoutes:
    def __init__(
        self,
        auth: Authenticator,
        store: UsageStore,
        admin_token: str,
        audit: AuditRecorder | None = None,
    ) -> None:
        self.auth = auth
        self.store = store
        self.admin_token = admin_token
        self.audit = audit if audit is not None else NullRecorder()

    def install(self, app: FastAPI) -> None:
        app.add_api_route("/v1/usage", self.tenant_usage, methods=["GET"])
        app.add_api_route("/admin/usage", self.admin_usage, methods=["GET"])

    async def tenant_usage(
        self,
        request: Request,
        start: str | None = None,
        end: str | None = None,
        granularity: str | None = None,
    ) -> dict[str, Any]:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        t0, t1, g = usage_window(start, end, granularity)
        report = await self.store.usage(ctx.tenant_id, t0, t1, g)
        return report.to_dict()

    async def admin_usage(
        self,
        request: Request,
        tenant: str | None = None,
        start: str | None = None,
        end: str | None = None,
        granularity: str | None = None,
    ) -> dict[str, Any]:
        self._require_admin(request)
        t0, t1, g = usage_window(start, end, granularity)
        report = await self.store.usage(tenant or None, t0, t1, g)
        read = actions.usage_read(tenant or None, t0.isoformat(), t1.isoformat(), g.value)
        await self.audit.record(ADMIN_ACTOR, *read)
        return report.to_dict()

    def _require_admin(self, request: Request) -> None:
        check_admin(request.headers.get("authorization"), self.admin_token.encode())
