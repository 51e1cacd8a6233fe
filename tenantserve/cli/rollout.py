"""`tenantserve rollout start|status|promote|rollback`: roll a new model version out.

Each command prints the admin API's JSON on stdout (`registry/rollout_views.py`). Without
`--url` it works on the data dir's database directly (the rollout's steps then happen in
the next tick of the server serving it); with `--url` (or TENANTSERVE_URL) it goes through
the admin API of that server. Errors are one line on stderr: exit code 2 for bad input,
1 for everything else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from tenantserve.audit import actions
from tenantserve.audit.log import AuditLog
from tenantserve.audit.recorder import AuditTrail
from tenantserve.cli.admin_client import (
    HTTP_TIMEOUT_S,
    CommandError,
    _error_from_response,
    admin_token_for,
    normalize_url,
)
from tenantserve.cli.runner import (
    AdminTokenOption,
    DataDirOption,
    UrlOption,
    cli_actor,
    run_admin_command,
)
from tenantserve.config import Settings
from tenantserve.registry.rollout import (
    DEFAULT_ERROR_RATE_MARGIN,
    DEFAULT_MIN_REQUESTS,
    DEFAULT_P95_LATENCY_MARGIN,
    DEFAULT_SHADOW_PERCENT,
    DEFAULT_STEP_SECONDS,
)
from tenantserve.registry.rollout_service import RolloutService
from tenantserve.registry.rollout_views import rollout_json

if TYPE_CHECKING:
    import httpx

JsonObject = dict[str, Any]

rollout_app = typer.Typer(
    name="rollout",
    help="Roll a new model version out: shadow, canary steps, automatic rollback.",
    no_args_is_help=True,
)
ReasonOption = Annotated[
    str | None, typer.Option(help="Why (recorded in the history).", show_default=False)
]


class RolloutAdmin(Protocol):
    """Rollout administration; every result is the admin API's JSON."""

    async def start(self, body: JsonObject) -> JsonObject:
        """The new rollout's `rollout_json`."""
        ...

    async def status(self, model: str) -> JsonObject:
        """The model's running (else latest) rollout."""
        ...

    async def promote(self, model: str, reason: str | None) -> JsonObject:
        """The rollout after moving to its next step."""
        ...

    async def rollback(self, model: str, reason: str | None) -> JsonObject:
        """The rolled-back rollout."""
        ...


class DirectRolloutAdmin:
    """`RolloutAdmin` over the rollout service, in this process; each change is recorded
    in `trail`."""

    def __init__(self, service: RolloutService, trail: AuditTrail) -> None:
        self._service = service
        self._trail = trail

    async def start(self, body: JsonObject) -> JsonObject:
        fields = dict(body)
        model, candidate = fields.pop("model"), fields.pop("candidate")
        out = rollout_json(await self._service.start(model, candidate, **fields))
        await self._trail.record(*actions.rollout_started(out, fields.get("reason")))
        return out

    async def status(self, model: str) -> JsonObject:
        return rollout_json(await self._service.status(model))

    async def promote(self, model: str, reason: str | None) -> JsonObject:
        before = await actions.state_before(self._service.status(model), rollout_json)
        out = rollout_json(await self._service.promote(model, reason))
        await self._trail.record(*actions.rollout_stepped("rollout.promote", before, out, reason))
        return out

    async def rollback(self, model: str, reason: str | None) -> JsonObject:
        before = await actions.state_before(self._service.status(model), rollout_json)
        out = rollout_json(await self._service.rollback(model, reason))
        await self._trail.record(*actions.rollout_stepped("rollout.rollback", before, out, reason))
        return out


class HttpRolloutAdmin:
    """`RolloutAdmin` over a running server's admin API (`/admin/rollouts...`)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def start(self, body: JsonObject) -> JsonObject:
        return await self._call("POST", "/admin/rollouts", body)

    async def status(self, model: str) -> JsonObject:
        return await self._call("GET", f"/admin/rollouts/{model}")

    async def promote(self, model: str, reason: str | None) -> JsonObject:
        return await self._call("POST", f"/admin/rollouts/{model}/promote", {"reason": reason})

    async def rollback(self, model: str, reason: str | None) -> JsonObject:
        return await self._call("POST", f"/admin/rollouts/{model}/rollback", {"reason": reason})

    async def _call(self, method: str, path: str, body: JsonObject | None = None) -> JsonObject:
        import httpx

        base = str(self._http.base_url).rstrip("/")
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TransportError as e:
            raise CommandError(
                f"cannot reach tenantserve at {base} ({type(e).__name__}: {e}); "
                "start it with `tenantserve up` or check --url / TENANTSERVE_URL"
            ) from e
        if not response.is_success:
            raise _error_from_response(method, path, base, response)
        try:
            data = response.json()
        except ValueError as e:
            raise CommandError(f"{method} {path} answered without JSON") from e
        if not isinstance(data, dict):
            raise CommandError(f"unexpected answer from the admin API: {data!r:.200}")
        return data


@rollout_app.command("start")
def rollout_start(
    model: Annotated[str, typer.Argument(help="The model name.")],
    candidate: Annotated[
        str, typer.Option(help="The version to roll out: VERSION or NAME@VERSION.")
    ],
    shadow_percent: Annotated[
        float, typer.Option(help="Percent of traffic mirrored to it first; 0 skips shadow.")
    ] = DEFAULT_SHADOW_PERCENT,
    step: Annotated[
        list[float] | None,
        typer.Option(help="A canary step in percent (repeatable; default 1, 10, 100)."),
    ] = None,
    step_seconds: Annotated[
        float, typer.Option(help="How long each step runs at least.")
    ] = DEFAULT_STEP_SECONDS,
    min_requests: Annotated[
        int, typer.Option(help="Candidate requests a step needs before it is judged.")
    ] = DEFAULT_MIN_REQUESTS,
    error_rate_margin: Annotated[
        float, typer.Option(help="Roll back above stable's error rate + this (0.02 = 2 points).")
    ] = DEFAULT_ERROR_RATE_MARGIN,
    p95_latency_margin: Annotated[
        float, typer.Option(help="Roll back above stable's p95 latency × this.")
    ] = DEFAULT_P95_LATENCY_MARGIN,
    max_divergence_rate: Annotated[
        float | None,
        typer.Option(help="Roll back when more shadow answers diverge.", show_default=False),
    ] = None,
    require_golden_set: Annotated[
        bool, typer.Option(help="The server's golden-set eval must pass first.")
    ] = False,
    reason: ReasonOption = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Start rolling CANDIDATE out over MODEL's newest active version; prints the rollout."""
    body: JsonObject = {
        "model": model,
        "candidate": candidate,
        "shadow_percent": shadow_percent,
        "step_seconds": step_seconds,
        "min_requests": min_requests,
        "error_rate_margin": error_rate_margin,
        "p95_latency_margin": p95_latency_margin,
        "max_divergence_rate": max_divergence_rate,
        "require_golden_set": require_golden_set,
        "reason": reason,
    }
    if step:
        body["canary_steps"] = step
    _run(data_dir, url, admin_token, lambda admin: admin.start(body))


@rollout_app.command("status")
def rollout_status(
    model: Annotated[str, typer.Argument(help="The model name.")],
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print MODEL's running (else latest) rollout with its history."""
    _run(data_dir, url, admin_token, lambda admin: admin.status(model))


@rollout_app.command("promote")
def rollout_promote(
    model: Annotated[str, typer.Argument(help="The model name.")],
    reason: ReasonOption = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Move MODEL's rollout to its next step now (from 100%: finish it)."""
    _run(data_dir, url, admin_token, lambda admin: admin.promote(model, reason))


@rollout_app.command("rollback")
def rollout_rollback(
    model: Annotated[str, typer.Argument(help="The model name.")],
    reason: ReasonOption = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Send all of MODEL's traffic back to the stable version now."""
    _run(data_dir, url, admin_token, lambda admin: admin.rollback(model, reason))


def _run(
    data_dir: Path | None,
    url: str | None,
    admin_token: str | None,
    operation: Callable[[RolloutAdmin], Awaitable[Any]],
) -> None:
    """Run one operation in the chosen mode and print its JSON, or fail in one line."""
    run_admin_command(
        data_dir, lambda settings: open_rollout_admin(settings, url, admin_token), operation
    )


@asynccontextmanager
async def open_rollout_admin(
    settings: Settings, url: str | None, admin_token: str | None
) -> AsyncIterator[RolloutAdmin]:
    """The admin API at `url` when given, else the data dir's database directly."""
    if url is not None:
        import httpx

        headers = {"Authorization": f"Bearer {admin_token_for(settings, admin_token)}"}
        async with httpx.AsyncClient(
            base_url=normalize_url(url), headers=headers, timeout=HTTP_TIMEOUT_S
        ) as http:
            yield HttpRolloutAdmin(http)
        return
    if admin_token is not None:
        raise CommandError("--admin-token only applies with --url", exit_code=2)
    async with open_direct_rollouts(settings) as (service, audit):
        yield DirectRolloutAdmin(service, AuditTrail(audit, cli_actor()))


@asynccontextmanager
async def open_direct_rollouts(
    settings: Settings,
) -> AsyncIterator[tuple[RolloutService, AuditLog]]:
    """The rollout service and the audit log on the data dir's database (or
    TENANTSERVE_DATABASE_URL), migrated; disposed on exit."""
    from sqlalchemy.exc import SQLAlchemyError

    from tenantserve.registry.unit_of_work import RegistryUnitOfWork
    from tenantserve.storage.database import Database, database_url
    from tenantserve.storage.migrations import migrate

    where = (
        "the database at TENANTSERVE_DATABASE_URL"
        if settings.database_url
        else f"the database in {settings.data_dir}"
    )
    db = Database(database_url(settings))
    try:
        try:
            await migrate(db.url)
        except (OSError, SQLAlchemyError) as e:
            raise CommandError(
                f"cannot open {where} ({type(e).__name__}: {e}); check --data-dir / "
                "TENANTSERVE_DATABASE_URL, or pass --url to go through a running server"
            ) from e
        try:
            yield RolloutService(lambda: RegistryUnitOfWork(db.sessionmaker)), AuditLog(db.engine)
        except SQLAlchemyError as e:
            raise CommandError(f"{where} failed ({type(e).__name__}: {e})") from e
    finally:
        await db.dispose()
