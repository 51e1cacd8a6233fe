"""`tenantserve usage show|reconcile`: metered usage for operators.

    usage show [--tenant T] [--start] [--end] [--granularity]     the usage JSON
                                              (direct on the database, or `--url`)
    usage reconcile --start --end [--tenant] [--log-dir] [--dry-run] [--via-outbox]
                                              request log vs ledger; re-emit the missing

Reconcile works on the database directly (it reads request log files, which only the
machine holding them can). Its report goes to stdout as JSON; progress to stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tenantserve.audit import actions
from tenantserve.audit.log import AuditLog
from tenantserve.cli.admin_client import HTTP_TIMEOUT_S, CommandError, admin_token_for
from tenantserve.cli.runner import AdminTokenOption, DataDirOption, UrlOption, cli_actor, fail
from tenantserve.config import Settings
from tenantserve.gateway.errors import ApiError
from tenantserve.gateway.request_log import RequestLogFiles
from tenantserve.gateway.routes_usage import parse_time, usage_window
from tenantserve.metering.outbox import OUTBOX_FILE, Outbox
from tenantserve.metering.reconcile import reconcile
from tenantserve.metering.store import UsageStore
from tenantserve.storage.database import create_engine, database_url
from tenantserve.storage.migrations import migrate

usage_app = typer.Typer(
    name="usage",
    help="Metered usage: show it, reconcile it with the request log.",
    no_args_is_help=True,
)

StartOption = Annotated[
    str | None,
    typer.Option(help="ISO 8601 time or date (UTC), or Unix seconds.", show_default=False),
]
TenantOption = Annotated[
    str | None, typer.Option(help="One tenant's id (default: all).", show_default=False)
]


@usage_app.command("show")
def show(
    tenant: TenantOption = None,
    start: StartOption = None,
    end: StartOption = None,
    granularity: Annotated[str, typer.Option(help="minute, hour, day or month.")] = "day",
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print usage buckets and their total."""
    settings = Settings.from_env(data_dir=data_dir)
    try:
        if url:
            result = _show_remote(settings, url, admin_token, tenant, start, end, granularity)
        else:
            result = asyncio.run(_show_direct(settings, tenant, start, end, granularity))
    except ApiError as e:
        fail(CommandError(e.detail.message, 2))
    print(json.dumps(result, indent=2))


async def _show_direct(
    settings: Settings,
    tenant: str | None,
    start: str | None,
    end: str | None,
    granularity: str,
) -> dict[str, Any]:
    t0, t1, g = usage_window(start, end, granularity)
    url = database_url(settings)
    await migrate(url)
    engine = create_engine(url)
    try:
        report = (await UsageStore(engine).usage(tenant, t0, t1, g)).to_dict()
        read = actions.usage_read(tenant, t0.isoformat(), t1.isoformat(), g.value)
        await AuditLog(engine).record(cli_actor(), *read)
        return report
    finally:
        await engine.dispose()


def _show_remote(
    settings: Settings,
    url: str,
    admin_token: str | None,
    tenant: str | None,
    start: str | None,
    end: str | None,
    granularity: str,
) -> dict[str, Any]:
    import httpx

    params = {"granularity": granularity}
    params.update({k: v for k, v in (("tenant", tenant), ("start", start), ("end", end)) if v})
    token = admin_token_for(settings, admin_token)
    try:
        r = httpx.get(
            f"{url.rstrip('/')}/admin/usage",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=HTTP_TIMEOUT_S,
        )
    except httpx.HTTPError as e:
        fail(CommandError(f"cannot reach {url}: {e}; is `tenantserve up` running there?", 1))
    if r.status_code != 200:
        fail(CommandError(f"{r.status_code}: {r.text}", 2 if r.status_code < 500 else 1))
    body: dict[str, Any] = r.json()
    return body


@usage_app.command("reconcile")
def reconcile_command(
    start: Annotated[str, typer.Option(help="Window start: ISO 8601 (UTC) or Unix seconds.")],
    end: Annotated[str, typer.Option(help="Window end (exclusive).")],
    tenant: TenantOption = None,
    log_dir: Annotated[
        list[Path] | None,
        typer.Option(
            help="Directory of request log files (repeatable; default the data dir's logs/).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Report only; re-emit nothing.")] = False,
    via_outbox: Annotated[
        bool,
        typer.Option(
            help="Re-emit into this data dir's outbox for the running pipeline to count, "
            "instead of straight into the usage store."
        ),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Compare the request log with metered usage and re-emit what is missing."""
    settings = Settings.from_env(data_dir=data_dir)
    try:
        t0, t1 = parse_time(start, "start"), parse_time(end, "end")
    except ApiError as e:
        fail(CommandError(e.detail.message, 2))
    if t1 <= t0:
        fail(CommandError("--end must be after --start", 2))
    dirs = log_dir or [settings.data_dir / "logs"]
    missing_dirs = [d for d in dirs if not d.is_dir()]
    if missing_dirs:
        fail(CommandError(f"no request log directory at {missing_dirs[0]}; pass --log-dir", 2))
    report = asyncio.run(
        _reconcile(settings, dirs, t0, t1, tenant, dry_run=dry_run, via_outbox=via_outbox)
    )
    print(json.dumps(report, indent=2))


async def _reconcile(
    settings: Settings,
    dirs: list[Path],
    t0: Any,
    t1: Any,
    tenant: str | None,
    dry_run: bool,
    via_outbox: bool,
) -> dict[str, Any]:
    url = database_url(settings)
    await migrate(url)
    engine = create_engine(url)
    outbox = Outbox(settings.data_dir / OUTBOX_FILE) if via_outbox and not dry_run else None
    try:
        logged = [e for d in dirs for e in RequestLogFiles(d).usage_events(t0, t1)]
        _progress(f"{len(logged)} logged requests in {', '.join(map(str, dirs))}")
        report = await reconcile(
            logged,
            UsageStore(engine),
            t0,
            t1,
            tenant,
            outbox=outbox,
            apply=not via_outbox,
            dry_run=dry_run,
        )
        _progress(
            f"{report.counted} counted, {len(report.missing)} missing, "
            f"{len(report.mismatched)} mismatched, {report.unlogged} not in the log"
        )
        if report.missing and not dry_run:
            where = "the outbox" if via_outbox else "the usage store"
            _progress(f"re-emitted {len(report.missing)} events into {where}")
        return report.to_dict()
    finally:
        if outbox is not None:
            outbox.close()
        await engine.dispose()


def _progress(message: str) -> None:
    print(f"[tenantserve] {message}", file=sys.stderr, flush=True)
