"""The audit log over HTTP, behind the operator's Bearer admin token.

    GET /admin/audit?after=SEQ&limit=N&action=&target=&actor=
                                  entries oldest first -> {"data": [entry], "next": SEQ|null}
    GET /admin/audit/verify[?head=SEQ:HASH]
                                  the whole chain checked -> {"ok", "checked", "head",
                                                              "problem"}

Pass `next` as `after` for the following page (`null`: the end). `head` is a chain head
kept from an earlier verify: a log cut short of it is reported as truncated. JSON as
`audit/views.py` writes it (the CLI prints the same). A missing or wrong token is 401, bad
parameters 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from tenantserve.audit.entry import ChainHead
from tenantserve.audit.log import AuditLog
from tenantserve.audit.views import page_json, report_json
from tenantserve.gateway.auth import check_admin
from tenantserve.gateway.errors import ApiError


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
        self,
        request: Request,
        after: str = "0",
        limit: str = "100",
        action: str | None = None,
        target: str | None = None,
        actor: str | None = None,
    ) -> dict[str, Any]:
        self._check(request)
        page = await self.audit.page(
            _int(after, "after"),
            _int(limit, "limit"),
            action or None,
            target or None,
            actor or None,
        )
        return page_json(page)

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


def _int(value: str, param: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"{param} must be an integer", param=param) from None
