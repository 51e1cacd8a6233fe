"""`tenantserve audit list|verify`: the audit log of admin actions.

Each command prints the admin API's JSON on stdout (`audit/views.py`). Without `--url` it
reads the data dir's database directly; with `--url` (or TENANTSERVE_URL) it goes through
the admin API of that server (`/admin/audit`). `verify` exits 1 and names the first
edited, removed, reordered or inserted entry when the chain is broken; pass the `head` an
earlier verify printed (`--head SEQ:HASH`) to detect a cut tail as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from tenantserve.audit.entry import ChainHead
from tenantserve.audit.log import AuditLog
from tenantserve.audit.views import page_json, report_json
from tenantserve.cli.admin_client import (
    HTTP_TIMEOUT_S,
    CommandError,
    _error_from_response,
    admin_token_for,
    normalize_url,
    open_direct,
)
from tenantserve.cli.runner import (
    AdminTokenOption,
    DataDirOption,
    UrlOption,
    fail,
    run_admin_command,
)
from tenantserve.config import Settings
from tenantserve.gateway.errors import ApiError
from tenantserve.gateway.routes_audit import AuditParams, audit_query

if TYPE_CHECKING:
    import httpx

JsonObject = dict[str, Any]

audit_app = typer.Typer(
    name="audit",
    help="The audit log of admin actions: list it, verify its hash chain.",
    no_args_is_help=True,
)


class AuditAdmin(Protocol):
    """Reading the audit log; every result is the admin API's JSON."""

    async def page(self, params: AuditParams) -> JsonObject:
        """`GET /admin/audit`'s page for `params`."""
        ...

    async def verify(self, head: str | None) -> JsonObject:
        """The verify report (with `head` SEQ:HASH: a cut tail is reported too)."""
        ...


class DirectAuditAdmin:
    """`AuditAdmin` over the audit log, in this process."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def page(self, params: AuditParams) -> JsonObject:
        try:
            query, limit = audit_query(params)
        except ApiError as e:
            raise CommandError(str(e), exit_code=2) from e
        return page_json(await self._audit.page(query, limit))

    async def verify(self, head: str | None) -> JsonObject:
        try:
            anchor = ChainHead.parse(head) if head else None
        except ValueError as e:
            raise CommandError(str(e), exit_code=2) from e
        return report_json(await self._audit.verify(anchor))


class HttpAuditAdmin:
    """`AuditAdmin` over a running server's admin API (`/admin/audit...`)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def page(self, params: AuditParams) -> JsonObject:
        return await self._get("/admin/audit", params.model_dump(exclude_none=True))

    async def verify(self, head: str | None) -> JsonObject:
        return await self._get("/admin/audit/verify", {"head": head} if head else {})

    async def _get(self, path: str, params: dict[str, str]) -> JsonObject:
        import httpx

        base = str(self._http.base_url).rstrip("/")
        try:
            response = await self._http.get(path, params=params)
        except httpx.TransportError as e:
            raise CommandError(
                f"cannot reach tenantserve at {base} ({type(e).__name__}: {e}); "
                "start it with `tenantserve up` or check --url / TENANTSERVE_URL"
            ) from e
        if not response.is_success:
            raise _error_from_response("GET", path, base, response)
        data = response.json()
        if not isinstance(data, dict):
            raise CommandError(f"unexpected answer from the admin API: {data!r:.200}")
        return data


@audit_app.command("list")
def audit_list(
    after: Annotated[int, typer.Option(help="Only entries after this seq (a page's `next`).")] = 0,
    before: Annotated[
        int | None,
        typer.Option(
            help="Only entries before this seq (a --newest-first page's `next`).",
            show_default=False,
        ),
    ] = None,
    newest_first: Annotated[bool, typer.Option(help="Newest entries first.")] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only entries at or after this time (ISO 8601, UTC).", show_default=False
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Only entries before this time (ISO 8601, UTC).", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many entries (1-1000).")] = 100,
    action: Annotated[
        str | None, typer.Option(help="Only this action (tenant.update...).", show_default=False)
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Only this target (an id).", show_default=False)
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only this actor (admin, cli:<user>...).", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print a page of entries, oldest first (or --newest-first); `next` is the --after
    (--before when newest first) of the following one."""
    params = AuditParams(
        order="desc" if newest_first else "asc",
        after=str(after),
        before=None if before is None else str(before),
        since=since,
        until=until,
        limit=str(limit),
        action=action,
        target=target,
        actor=actor,
    )
    _run(data_dir, url, admin_token, lambda admin: admin.page(params))


@audit_app.command("verify")
def audit_verify(
    head: Annotated[
        str | None,
        typer.Option(
            help="SEQ:HASH an earlier verify printed: a log cut short of it fails too.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Check the whole hash chain; prints the report, exits 1 naming the first bad entry."""
    reports: list[JsonObject] = []

    async def verify(admin: AuditAdmin) -> JsonObject:
        reports.append(await admin.verify(head))
        return reports[-1]

    _run(data_dir, url, admin_token, verify)
    problem = reports[-1].get("problem") if reports else None
    if problem:
        fail(CommandError(f"the audit log is broken ({problem['kind']}): {problem['message']}"))


def _run(
    data_dir: Path | None,
    url: str | None,
    admin_token: str | None,
    operation: Callable[[AuditAdmin], Awaitable[Any]],
) -> None:
    run_admin_command(
        data_dir, lambda settings: open_audit_admin(settings, url, admin_token), operation
    )


@asynccontextmanager
async def open_audit_admin(
    settings: Settings, url: str | None, admin_token: str | None
) -> AsyncIterator[AuditAdmin]:
    """The admin API at `url` when given, else the data dir's database directly."""
    if url is not None:
        import httpx

        headers = {"Authorization": f"Bearer {admin_token_for(settings, admin_token)}"}
        async with httpx.AsyncClient(
            base_url=normalize_url(url), headers=headers, timeout=HTTP_TIMEOUT_S
        ) as http:
            yield HttpAuditAdmin(http)
        return
    if admin_token is not None:
        raise CommandError("--admin-token only applies with --url", exit_code=2)
    async with open_direct(settings) as tenancy:
        yield DirectAuditAdmin(tenancy.audit)
