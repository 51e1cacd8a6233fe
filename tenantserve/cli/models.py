"""`tenantserve model register|list|deprecate|archive`: the model catalog.

Each command prints the admin API's JSON on stdout (`registry/views.py`). Without `--url`
it works on the data dir's database and artifact store directly (`register` shows a
progress bar on stderr while it hashes and uploads); with `--url` (or TENANTSERVE_URL) it
goes through the admin API of that server, which reads PATH on its own file system.
Errors are one line on stderr: exit code 2 for bad input, 1 for everything else.
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
from tenantserve.cli.runner import AdminTokenOption, DataDirOption, cli_actor, run_admin_command
from tenantserve.config import Settings
from tenantserve.errors import InvalidRequestError
from tenantserve.registry.artifacts import Progress, TransferProgress
from tenantserve.registry.service import RegistryService
from tenantserve.registry.views import version_json

if TYPE_CHECKING:
    import httpx

JsonObject = dict[str, Any]

model_app = typer.Typer(
    name="model",
    help="Register, list, deprecate and archive model versions.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="TENANTSERVE_URL",
        help="Go through the admin API of the server at this URL (http://host:port) "
        "instead of the database; PATH is then read on the server.",
        show_default=False,
    ),
]
LIST_HINT = "`tenantserve model list` shows the registered versions"


class RegistryAdmin(Protocol):
    """Catalog administration; every result is the admin API's JSON."""

    async def register(self, body: JsonObject, progress: Progress | None) -> JsonObject:
        """The registered (or identical, existing) version's `version_json`."""
        ...

    async def list_versions(self, name: str | None) -> list[JsonObject]:
        """Every version (of `name`), by name then oldest first."""
        ...

    async def deprecate(self, ref: str, end_date: str, replacement: str | None) -> JsonObject:
        """The deprecated version's `version_json`."""
        ...

    async def archive(self, ref: str, replacement: str | None) -> JsonObject:
        """The archived version's `version_json`."""
        ...


class DirectRegistryAdmin:
    """`RegistryAdmin` over the registry service, in this process; each change is recorded
    in `trail`."""

    def __init__(self, service: RegistryService, trail: AuditTrail) -> None:
        self._service = service
        self._trail = trail

    async def register(self, body: JsonObject, progress: Progress | None) -> JsonObject:
        fields = dict(body)
        path = Path(fields.pop("path"))
        name, version = fields.pop("name"), fields.pop("version")
        result = await self._service.register(path, name, version, progress=progress, **fields)
        out = version_json(result.version)
        await self._trail.record(*actions.model_registered(out, result.created))
        return out

    async def list_versions(self, name: str | None) -> list[JsonObject]:
        found = await (self._service.versions(name) if name else self._service.list())
        return [version_json(v) for v in found]

    async def deprecate(self, ref: str, end_date: str, replacement: str | None) -> JsonObject:
        before = await actions.state_before(self._service.get(ref), version_json)
        out = version_json(await self._service.deprecate(ref, end_date, replacement))
        await self._trail.record(*actions.model_deprecated(before, out))
        return out

    async def archive(self, ref: str, replacement: str | None) -> JsonObject:
        before = await actions.state_before(self._service.get(ref), version_json)
        out = version_json(await self._service.archive(ref, replacement))
        await self._trail.record(*actions.model_archived(before, out))
        return out


class HttpRegistryAdmin:
    """`RegistryAdmin` over a running server's admin API (`/admin/models...`)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def register(self, body: JsonObject, progress: Progress | None) -> JsonObject:
        return _object(await self._call("POST", "/admin/models", body))

    async def list_versions(self, name: str | None) -> list[JsonObject]:
        data = await self._call("GET", f"/admin/models/{name}" if name else "/admin/models")
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise CommandError(f"unexpected answer from the admin API: {data!r:.200}")
        return [_object(v) for v in data["data"]]

    async def deprecate(self, ref: str, end_date: str, replacement: str | None) -> JsonObject:
        body: JsonObject = {"end_date": end_date}
        if replacement is not None:
            body["replacement"] = replacement
        return _object(await self._call("POST", f"{_path(ref)}/deprecate", body))

    async def archive(self, ref: str, replacement: str | None) -> JsonObject:
        body: JsonObject = {} if replacement is None else {"replacement": replacement}
        return _object(await self._call("POST", f"{_path(ref)}/archive", body))

    async def _call(self, method: str, path: str, body: JsonObject | None = None) -> Any:
        import httpx

        base = str(self._http.base_url).rstrip("/")
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TransportError as e:
            raise CommandError(
                f"cannot reach tenantserve at {base} ({type(e).__name__}: {e}); "
                "start it with `tenantserve up` or check --url / TENANTSERVE_URL"
            ) from e
        if response.is_success:
            try:
                return response.json()
            except ValueError as e:
                raise CommandError(f"{method} {path} answered without JSON") from e
        raise _error_from_response(method, path, base, response)


def _path(ref: str) -> str:
    name, sep, version = ref.partition("@")
    if not sep or not name or not version:
        raise InvalidRequestError(f"name a version: NAME@VERSION, not {ref!r}")
    return f"/admin/models/{name}/{version}"


def _object(data: Any) -> JsonObject:
    if not isinstance(data, dict):
        raise CommandError(f"unexpected answer from the admin API: {data!r:.200}")
    return data


@model_app.command("register")
def model_register(
    path: Annotated[Path, typer.Argument(help="Checkpoint directory (or one file, e.g. a .gguf).")],
    name: Annotated[str, typer.Option(help="Model name: [a-z0-9][a-z0-9._-]*.")],
    version: Annotated[str, typer.Option(help="Semver (1.2.3) or a date tag (2026-11-27).")],
    format: Annotated[
        str | None,
        typer.Option(help="safetensors or gguf (default: from the files).", show_default=False),
    ] = None,
    quantization: Annotated[
        str | None,
        typer.Option(
            help="fp32, bf16, fp16, int8, ... (default: from config.json or the GGUF name).",
            show_default=False,
        ),
    ] = None,
    runtime: Annotated[
        list[str] | None,
        typer.Option(help="A runtime that serves it (repeatable; default tenantserve)."),
    ] = None,
    device: Annotated[str, typer.Option(help="any, cpu or cuda.")] = "any",
    min_memory_bytes: Annotated[
        int | None,
        typer.Option(help="Memory it needs (default: its size).", show_default=False),
    ] = None,
    scope: Annotated[
        str, typer.Option(help="public, or the tenant id (ten_...) it is private to.")
    ] = "public",
    canary: Annotated[bool, typer.Option(help="Register it as a canary.")] = False,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Register a checkpoint as NAME@VERSION (immutable); prints the version's JSON."""
    body: JsonObject = {
        "path": str(path.resolve()) if url is None else str(path),
        "name": name,
        "version": version,
        "device": device,
        "scope": scope,
        "status": "canary" if canary else "active",
    }
    if format is not None:
        body["format"] = format
    if quantization is not None:
        body["quantization"] = quantization
    if runtime:
        body["runtimes"] = runtime
    if min_memory_bytes is not None:
        body["min_memory_bytes"] = min_memory_bytes
    with _ProgressBar() as bar:
        _run(data_dir, url, admin_token, lambda admin: admin.register(body, bar.update))


@model_app.command("list")
def model_list(
    name: Annotated[
        str | None, typer.Argument(help="Only this model's versions.", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print the registered versions as a JSON list, by name then oldest first."""
    _run(data_dir, url, admin_token, lambda admin: admin.list_versions(name))


@model_app.command("deprecate")
def model_deprecate(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION")],
    end_date: Annotated[
        str, typer.Option(help="When it will be archived (YYYY-MM-DD, ≥ 90 days out).")
    ],
    replacement: Annotated[
        str | None, typer.Option(help="NAME@VERSION to use instead.", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Deprecate a version: it keeps serving, with a deprecation warning header."""
    _run(
        data_dir,
        url,
        admin_token,
        lambda admin: admin.deprecate(ref, end_date, replacement),
        not_found_hint=LIST_HINT,
    )


@model_app.command("archive")
def model_archive(
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION")],
    replacement: Annotated[
        str | None, typer.Option(help="NAME@VERSION to use instead.", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Archive a deprecated (or canary) version: requests pinned to it are refused with
    an error naming the replacement."""
    _run(
        data_dir,
        url,
        admin_token,
        lambda admin: admin.archive(ref, replacement),
        not_found_hint=LIST_HINT,
    )


class _ProgressBar:
    """A progress bar on stderr per phase (hash, upload) while a direct-mode register runs."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tasks:
            self._progress.stop()

    def update(self, event: TransferProgress) -> None:
        if not self._tasks:
            self._progress.start()
        task = self._tasks.get(event.phase)
        if task is None:
            task = self._progress.add_task(event.phase, total=event.total_bytes)
            self._tasks[event.phase] = task
        self._progress.update(task, completed=event.done_bytes, total=event.total_bytes)


def _run(
    data_dir: Path | None,
    url: str | None,
    admin_token: str | None,
    operation: Callable[[RegistryAdmin], Awaitable[Any]],
    not_found_hint: str | None = None,
) -> None:
    """Run one operation in the chosen mode and print its JSON, or fail in one line."""
    run_admin_command(
        data_dir,
        lambda settings: open_registry_admin(settings, url, admin_token),
        operation,
        not_found_hint,
    )


@asynccontextmanager
async def open_registry_admin(
    settings: Settings, url: str | None, admin_token: str | None
) -> AsyncIterator[RegistryAdmin]:
    """The admin API at `url` when given, else the data dir's registry directly."""
    if url is not None:
        import httpx

        base = normalize_url(url)
        token = admin_token_for(settings, admin_token)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=HTTP_TIMEOUT_S
        ) as http:
            yield HttpRegistryAdmin(http)
        return
    if admin_token is not None:
        raise CommandError("--admin-token only applies with --url", exit_code=2)
    async with open_direct_registry(settings) as (service, audit):
        yield DirectRegistryAdmin(service, AuditTrail(audit, cli_actor()))


@asynccontextmanager
async def open_direct_registry(
    settings: Settings,
) -> AsyncIterator[tuple[RegistryService, AuditLog]]:
    """The registry service on the data dir's database (or TENANTSERVE_DATABASE_URL) and
    the configured artifact store, and the audit log, migrated; disposed on exit."""
    from sqlalchemy.exc import SQLAlchemyError

    from tenantserve.registry.artifacts import build_artifact_store
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
        store = build_artifact_store(settings.artifacts, settings.data_dir)
        try:
            service = RegistryService(lambda: RegistryUnitOfWork(db.sessionmaker), store)
            yield service, AuditLog(db.engine)
        except SQLAlchemyError as e:
            raise CommandError(f"{where} failed ({type(e).__name__}: {e})") from e
    finally:
        await db.dispose()
