"""The admin operations the `tenant` and `key` commands run, in two modes with one JSON:

- `DirectAdminClient`: the tenancy service on the data dir's database, in this process,
  each change recorded in the audit log (as `cli:<user>`, like the admin API's `admin`);
- `HttpAdminClient`: the admin API of a running server (`/admin/...`, Bearer admin token).

Both return `tenant_json` / `key_json` data and raise the `tenantserve.errors` tree
(an HTTP error status is mapped back onto it), so the commands cannot tell them apart.
`CommandError` is what the commands print as one line before exiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from tenantserve.audit import actions
from tenantserve.audit.recorder import AuditTrail
from tenantserve.config import Settings
from tenantserve.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    TenantServeError,
)
from tenantserve.tenancy.service import TenancyService
from tenantserve.tenancy.views import key_json, tenant_json

if TYPE_CHECKING:
    import httpx

    from tenantserve.bootstrap import Tenancy

HTTP_TIMEOUT_S = 30.0

JsonObject = dict[str, Any]


class CommandError(Exception):
    """A failure the CLI reports as one line on stderr, exiting with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TenantPatch(TypedDict, total=False):
    """The fields of `PATCH /admin/tenants/{id}` (an absent field stays unchanged)."""

    tier: str
    region: str
    status: str
    limits: dict[str, int | None]
    # The whole new quota list (`[]` removes them all).
    quotas: list[dict[str, Any]]
    # Opt-in: the tenant's request records keep prompt and completion text.
    log_content: bool


class AdminClient(Protocol):
    """Tenant and key administration; every result is the admin API's JSON."""

    async def create_tenant(self, name: str, tier: str, region: str) -> JsonObject:
        """The new active tenant's `tenant_json`."""
        ...

    async def list_tenants(self) -> list[JsonObject]:
        """Every tenant's `tenant_json`, oldest first."""
        ...

    async def update_tenant(self, tenant_id: str, patch: TenantPatch) -> JsonObject:
        """The updated tenant's `tenant_json`; NotFoundError for an unknown id."""
        ...

    async def create_key(
        self, tenant_id: str, expires_days: float | None, allowed_models: Sequence[str]
    ) -> JsonObject:
        """The new key's `key_json`, with the plaintext `key` (the only time it is shown)."""
        ...

    async def revoke_key(self, key_id: str) -> JsonObject:
        """The revoked key's `key_json` (idempotent); NotFoundError for an unknown id."""
        ...

    async def move_tenant(
        self, tenant_id: str, pool: str | None, drain_timeout_s: float
    ) -> JsonObject:
        """Move the tenant to a dedicated pool (None: back to shared); the move report."""
        ...


class DirectAdminClient:
    """`AdminClient` over the tenancy service, in this process (no server involved); each
    change is recorded in `trail`."""

    def __init__(self, service: TenancyService, trail: AuditTrail) -> None:
        self._service = service
        self._trail = trail

    async def create_tenant(self, name: str, tier: str, region: str) -> JsonObject:
        out = tenant_json(await self._service.create_tenant(name, tier, region))
        await self._trail.record(*actions.tenant_created(out))
        return out

    async def list_tenants(self) -> list[JsonObject]:
        return [tenant_json(t) for t in await self._service.list_tenants()]

    async def update_tenant(self, tenant_id: str, patch: TenantPatch) -> JsonObject:
        before = await actions.state_before(self._service.get_tenant(tenant_id), tenant_json)
        tenant = await self._service.update_tenant(
            tenant_id,
            tier=patch.get("tier"),
            region=patch.get("region"),
            status=patch.get("status"),
            limits=patch.get("limits"),
            quotas=patch.get("quotas"),
            log_content=patch.get("log_content"),
        )
        out = tenant_json(tenant)
        await self._trail.record(*actions.tenant_updated(before, out))
        return out

    async def create_key(
        self, tenant_id: str, expires_days: float | None, allowed_models: Sequence[str]
    ) -> JsonObject:
        new = await self._service.create_key(tenant_id, expires_days, allowed_models)
        await self._trail.record(*actions.key_created(key_json(new.key)))
        return key_json(new.key, new.plaintext)

    async def revoke_key(self, key_id: str) -> JsonObject:
        out = key_json(await self._service.revoke_key(key_id))
        await self._trail.record(*actions.key_revoked(out))
        return out

    async def move_tenant(
        self, tenant_id: str, pool: str | None, drain_timeout_s: float
    ) -> JsonObject:
        raise CommandError(
            "moving a tenant warms the pool and drains in-flight requests in the running "
            "gateway: pass --url (or set TENANTSERVE_URL) to go through its admin API",
            2,
        )


class HttpAdminClient:
    """`AdminClient` over a running server's admin API; `http` carries the base URL and
    the admin token (any transport: a socket, or `httpx.ASGITransport(app)` in tests)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def create_tenant(self, name: str, tier: str, region: str) -> JsonObject:
        body = {"name": name, "tier": tier, "region": region}
        return _object(await self._call("POST", "/admin/tenants", body))

    async def list_tenants(self) -> list[JsonObject]:
        data = await self._call("GET", "/admin/tenants")
        # Accept both a bare list and a `{"data": [...]}` envelope.
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise CommandError(f"unexpected answer from GET /admin/tenants: {data!r:.200}")
        return [_object(t) for t in data]

    async def update_tenant(self, tenant_id: str, patch: TenantPatch) -> JsonObject:
        return _object(await self._call("PATCH", f"/admin/tenants/{tenant_id}", dict(patch)))

    async def create_key(
        self, tenant_id: str, expires_days: float | None, allowed_models: Sequence[str]
    ) -> JsonObject:
        body: JsonObject = {}
        if expires_days is not None:
            body["expires_days"] = expires_days
        if allowed_models:
            body["allowed_models"] = list(allowed_models)
        return _object(await self._call("POST", f"/admin/tenants/{tenant_id}/keys", body))

    async def revoke_key(self, key_id: str) -> JsonObject:
        return _object(await self._call("DELETE", f"/admin/keys/{key_id}"))

    async def move_tenant(
        self, tenant_id: str, pool: str | None, drain_timeout_s: float
    ) -> JsonObject:
        body: JsonObject = {"pool": pool, "drain_timeout_s": drain_timeout_s}
        return _object(await self._call("POST", f"/admin/tenants/{tenant_id}/move", body))

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
                raise CommandError(
                    f"{method} {path} answered {response.status_code} without JSON; "
                    f"is {base} a tenantserve server?"
                ) from e
        raise _error_from_response(method, path, base, response)


def _object(data: Any) -> JsonObject:
    if not isinstance(data, dict):
        raise CommandError(f"unexpected answer from the admin API: {data!r:.200}")
    return data


def _error_from_response(
    method: str, path: str, base: str, response: httpx.Response
) -> TenantServeError | CommandError:
    """An error status as the exception the direct mode raises for the same mistake."""
    status = response.status_code
    message = _error_message(response)
    if status in (401, 403):
        cls = AuthenticationError if status == 401 else PermissionDeniedError
        return cls(
            f"the admin token was refused by {base} ({status}: {message}); pass --admin-token "
            "or set TENANTSERVE_ADMIN_TOKEN to the token `tenantserve up` printed (the server "
            "keeps it in its data dir's admin_token file)"
        )
    if status == 404:
        return NotFoundError(message)
    if status in (400, 409, 422):
        return InvalidRequestError(message)
    if status == 405:
        return CommandError(
            f"{method} {path} is not supported by {base} (405); is it a tenantserve server "
            "with the admin API?"
        )
    return CommandError(f"{method} {path} failed on {base} with {status}: {message}")


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-shaped (or FastAPI-shaped) error body, else its text."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if data.get("detail"):
            return str(data["detail"])
    return str(data)[:200]


def normalize_url(url: str) -> str:
    """The server's base URL: scheme and host required; a trailing `/` or `/v1` is dropped."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"--url must look like http://127.0.0.1:8000, not {url!r}", exit_code=2)
    return url.removesuffix("/v1")


def admin_token_for(settings: Settings, explicit: str | None) -> str:
    """--admin-token, else TENANTSERVE_ADMIN_TOKEN, else the data dir's admin_token file;
    never creates one (a token made here would not be the server's)."""
    from tenantserve.bootstrap import ADMIN_TOKEN_FILE, ensure_admin_token

    if explicit:
        return explicit
    if settings.admin_token or (settings.data_dir / ADMIN_TOKEN_FILE).is_file():
        return ensure_admin_token(settings)[0]
    raise CommandError(
        f"no admin token: pass --admin-token or set TENANTSERVE_ADMIN_TOKEN (`tenantserve up` "
        f"prints it on first start; it is not in {settings.data_dir / ADMIN_TOKEN_FILE})",
        exit_code=2,
    )


@asynccontextmanager
async def open_admin_client(
    settings: Settings, url: str | None, admin_token: str | None
) -> AsyncIterator[AdminClient]:
    """The admin API at `url` when given, else the data dir's database directly (opened,
    migrated, and disposed on exit)."""
    if url is not None:
        base = normalize_url(url)
        token = admin_token_for(settings, admin_token)
        try:
            import httpx
        except ImportError as e:  # a dev dependency; `make up` installs only the runtime ones
            raise CommandError(
                "--url needs httpx: .venv/bin/pip install httpx==0.28.1 (or use direct mode "
                "without --url on the server's data dir)"
            ) from e
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=HTTP_TIMEOUT_S
        ) as http:
            yield HttpAdminClient(http)
        return
    if admin_token is not None:
        raise CommandError("--admin-token only applies with --url", exit_code=2)
    from tenantserve.cli.runner import cli_actor

    async with open_direct(settings) as tenancy:
        yield DirectAdminClient(tenancy.service, AuditTrail(tenancy.audit, cli_actor()))


@asynccontextmanager
async def open_direct_tenancy(settings: Settings) -> AsyncIterator[TenancyService]:
    """The tenancy service of `open_direct`."""
    async with open_direct(settings) as tenancy:
        yield tenancy.service


@asynccontextmanager
async def open_direct(settings: Settings) -> AsyncIterator[Tenancy]:
    """The tenancy, registry and audit log on the data dir's database (or
    TENANTSERVE_DATABASE_URL), migrated; disposed on exit. Database failures become
    one-line `CommandError`s."""
    from sqlalchemy.exc import SQLAlchemyError

    from tenantserve.bootstrap import open_tenancy

    where = (
        "the database at TENANTSERVE_DATABASE_URL"
        if settings.database_url
        else f"the database in {settings.data_dir}"
    )
    try:
        tenancy = await open_tenancy(settings)
    except (OSError, SQLAlchemyError) as e:
        raise CommandError(
            f"cannot open {where} ({type(e).__name__}: {e}); check --data-dir / "
            "TENANTSERVE_DATABASE_URL, or pass --url to go through a running server"
        ) from e
    try:
        yield tenancy
    except SQLAlchemyError as e:
        raise CommandError(f"{where} failed ({type(e).__name__}: {e})") from e
    finally:
        await tenancy.db.dispose()
