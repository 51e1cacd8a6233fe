"""The audit log over HTTP, behind the operator's Bearer admin token.

    GET /admin/audit?order=asc|desc&after=SEQ&before=SEQ&since=T&until=T&limit=N
                    &action=&target=&actor=
                                  entries oldest (asc, the default) or newest (desc) first
                                  -> {"data": [entry], "next": SEQ|null}
    GET /admin/audit/verify[?head=SEQ:HASH]
                                  the whole chain checked -> {"ok", "checked", "head",
                                                              "problem"}

Pass `next` as `after` for the following page, or as `before` when newest first (`null`:
the end). `since`/`until` bound the entries' time: ISO 8601 (UTC unless it says otherwise)
or Unix seconds, `until` excluded. `head` is a chain head
kept from an earlier verify: a log cut short of it is reported as truncated. JSON as
`audit/views.py` writes it (the CLI prints the same). A missing or wrong token is 401, bad
parameters 400.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel

from tenantserve.audit.entry import ChainHead
from tenantserve.audit.log import AuditLog
from tenantserve.audit.repository import AuditQuery
from tenantserve.audit.views import page_json, report_json
from tenantserve.gateway.auth import check_admin
from tenantserve.gateway.errors import ApiError
from tenantserve.gateway.routes_usage import parse_time


class AuditParams(BaseModel):
    """`GET /admin/audit`'s query parameters, as sent (`audit_query` checks them)."""

    order: str = "asc"
    after: str = "0"
    before: str | None = None
    since: str | None = None
    until: str | None = None
    limit: str = "100"
    action: str | None = None
    target: str | None = None
    actor: str | None = None


class AuditRoutes:
    """Handlers of `/admin/audit...`; each checks the admin token first."""

    def __init__(self, audit: AuditLog, admin_token: str) -> None:
        self.audit = audit
        self._token = admin_token.encode()

    def install(self, app: FastAPI) -> None:
        """Add the audit routes to `app`."""
        app.add_api_route("/admin/audit", self.list_entries, methods=["GET"])
        app.add_api_route("/admin/audit/verify", self.verify, methods=["GET"])

    async def list_entries(
        self, request: Request, params: Annotated[AuditParams, Query()]
    ) -> dict[str, Any]:
        self._check(request)
        query, limit = audit_query(params)
        return page_json(await self.audit.page(query, limit))

    async def verify(self, request: Request, head: str | None = None) -> dict[str, Any]:
        self._check(request)
        try:
            anchor = ChainHead.parse(head) if head else None
        except ValueError as e:
            raise ApiError(400, str(e), param="head") from e
        return report_json(await self.audit.verify(anchor))

    def _check(self, request: Request) -> None:
        """AuthenticationError (401) unless the request carries the admin token."""
        check_admin(request.headers.get("authorization"), self._token)


def audit_query(params: AuditParams) -> tuple[AuditQuery, int]:
    """The query and page size `params` ask for (ApiError 400 when one is malformed); the
    CLI reads its options through this too."""
    if params.order not in ("asc", "desc"):
        raise ApiError(400, "order must be asc or desc", param="order")
    query = AuditQuery(
        after_seq=_int(params.after or "0", "after"),
        before_seq=_int(params.before, "before") if params.before else None,
        action=params.action or None,
        target=params.target or None,
        actor=params.actor or None,
        since=parse_time(params.since, "since") if params.since else None,
        until=parse_time(params.until, "until") if params.until else None,
        newest_first=params.order == "desc",
    )
    return query, _int(params.limit or "100", "limit")


def _int(value: str, param: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"{param} must be an integer", param=param) from None
