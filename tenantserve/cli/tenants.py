"""`tenantserve tenant create|list|update` (tier, region, status, limits, quotas,
content logging), `tenantserve tenant move` (to a dedicated pool and back; through a
running server's admin API only) and
`tenantserve key create|revoke`.

Each command prints the admin API's JSON on stdout. Without `--url` it works on the
data dir's database directly; with `--url` (or TENANTSERVE_URL) it goes through the
admin API of that server with the admin token. Errors are one line on stderr: exit
code 2 for bad input (the message names the choices), 1 for everything else.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tenantserve.cli.admin_client import (
    AdminClient,
    CommandError,
    TenantPatch,
    open_admin_client,
)
from tenantserve.cli.runner import (
    AdminTokenOption,
    DataDirOption,
    UrlOption,
    fail,
    run_admin_command,
)

T = TypeVar("T")

tenant_app = typer.Typer(
    name="tenant", help="Create, list and update tenants.", no_args_is_help=True
)
key_app = typer.Typer(name="key", help="Create and revoke tenants' API keys.", no_args_is_help=True)

TENANT_LIST_HINT = "`tenantserve tenant list` shows the tenant ids"


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Option(help="Display name.")],
    tier: Annotated[str, typer.Option(help="free, standard or premium.")],
    region: Annotated[str, typer.Option(help="us or eu: where it is served.")],
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Create an active tenant; prints its JSON, with the `id` to create keys for."""
    _run(data_dir, url, admin_token, lambda admin: admin.create_tenant(name, tier, region))


@tenant_app.command("list")
def tenant_list(
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print every tenant as a JSON list, oldest first."""
    _run(data_dir, url, admin_token, lambda admin: admin.list_tenants())


@tenant_app.command("update")
def tenant_update(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="The tenant's id (ten_...).")],
    tier: Annotated[
        str | None, typer.Option(help="free, standard or premium.", show_default=False)
    ] = None,
    region: Annotated[str | None, typer.Option(help="us or eu.", show_default=False)] = None,
    status: Annotated[
        str | None,
        typer.Option(help="active or suspended (no key of it authenticates).", show_default=False),
    ] = None,
    limits: Annotated[
        str | None,
        typer.Option(
            help="Overrides of the tier defaults as JSON, e.g. '{\"requests_per_minute\": 10}'; "
            "merged into the current ones, null resets one to the tier's default.",
            show_default=False,
        ),
    ] = None,
    quotas: Annotated[
        str | None,
        typer.Option(
            help="The tenant's whole quota list as JSON (replaces the current one; '[]' "
            'removes them), e.g. \'[{"metric": "tokens", "period": "month", "limit": 1000000, '
            '"enforcement": "hard"}]\'. metric: requests, tokens, prompt_tokens or '
            "completion_tokens; period: day or month (UTC); enforcement: hard (refuse) or "
            "soft (clamp max_tokens and alert).",
            show_default=False,
        ),
    ] = None,
    log_content: Annotated[
        bool | None,
        typer.Option(
            "--log-content/--no-log-content",
            help="Opt the tenant in to (or out of) prompt and completion text in its request "
            "records (default off: never stored).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Change a tenant's tier, region, status, limits, quotas or content logging; prints
    the updated JSON."""
    patch = TenantPatch()
    if tier is not None:
        patch["tier"] = tier
    if region is not None:
        patch["region"] = region
    if status is not None:
        patch["status"] = status
    if limits is not None:
        patch["limits"] = _parse_limits(limits)
    if quotas is not None:
        patch["quotas"] = _parse_quotas(quotas)
    if log_content is not None:
        patch["log_content"] = log_content
    if not patch:
        fail(
            CommandError(
                "nothing to change: pass --tier, --region, --status, --limits, --quotas or "
                "--log-content / --no-log-content",
                2,
            )
        )
    _run(
        data_dir,
        url,
        admin_token,
        lambda admin: admin.update_tenant(tenant_id, patch),
        not_found_hint=TENANT_LIST_HINT,
    )


@tenant_app.command("move")
def tenant_move(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="The tenant's id (ten_...).")],
    to_pool: Annotated[
        str | None,
        typer.Option(help="The dedicated pool to move it to.", show_default=False),
    ] = None,
    to_shared: Annotated[
        bool, typer.Option("--to-shared", help="Move it back to the shared pools.")
    ] = False,
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for its requests on the old pool.")
    ] = 60.0,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Move a premium tenant to a dedicated pool with zero downtime (the pool checked,
    its adapters warmed, routing switched at once, the old pool drained); prints the
    move report."""
    if (to_pool is None) == (not to_shared):
        fail(CommandError("give exactly one of --to-pool NAME and --to-shared", 2))
    _run(
        data_dir,
        url,
        admin_token,
        lambda admin: admin.move_tenant(tenant, to_pool, drain_timeout),
        not_found_hint=TENANT_LIST_HINT,
    )


@key_app.command("create")
def key_create(
    tenant: Annotated[str, typer.Option(help="The tenant's id (ten_...).")],
    expires: Annotated[
        float | None,
        typer.Option(help="Days until the key expires (default: never).", show_default=False),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated models the key may use (default: all of the tenant's).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Issue an API key; prints its JSON with the plaintext `key`, shown this once only."""
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else []
    _run(
        data_dir,
        url,
        admin_token,
        lambda admin: admin.create_key(tenant, expires, allowed),
        not_found_hint=TENANT_LIST_HINT,
    )


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (key_...).")],
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Revoke an API key at once (revoking twice is harmless); prints its JSON."""
    _run(data_dir, url, admin_token, lambda admin: admin.revoke_key(key_id))


def _parse_limits(text: str) -> dict[str, int | None]:
    try:
        data = json.loads(text)
    except ValueError as e:
        fail(CommandError(f"--limits is not valid JSON ({e}); e.g. {_LIMITS_EXAMPLE}", 2))
    if not isinstance(data, dict):
        fail(CommandError(f"--limits must be a JSON object, e.g. {_LIMITS_EXAMPLE}", 2))
    return data


_LIMITS_EXAMPLE = "'{\"requests_per_minute\": 10}'"


def _parse_quotas(text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except ValueError as e:
        fail(CommandError(f"--quotas is not valid JSON ({e}); e.g. {_QUOTAS_EXAMPLE}", 2))
    if not isinstance(data, list) or not all(isinstance(q, dict) for q in data):
        fail(CommandError(f"--quotas must be a JSON list of objects, e.g. {_QUOTAS_EXAMPLE}", 2))
    return data


_QUOTAS_EXAMPLE = (
    '\'[{"metric": "tokens", "period": "month", "limit": 1000000, "enforcement": "hard"}]\''
)


def _run(
    data_dir: Path | None,
    url: str | None,
    admin_token: str | None,
    operation: Callable[[AdminClient], Awaitable[Any]],
    not_found_hint: str | None = None,
) -> None:
    """Run one operation in the chosen mode and print its JSON, or fail in one line."""
    run_admin_command(
        data_dir,
        lambda settings: open_admin_client(settings, url, admin_token),
        operation,
        not_found_hint,
    )
