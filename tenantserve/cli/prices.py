"""`tenantserve price set|list` (the price book) and `tenantserve credit grant|list`.

Each command prints the admin API's JSON on stdout; direct on the data dir's database,
or through the admin API with `--url`. Amounts are decimal strings (12.50), never
rounded through a float.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tenantserve.cli.admin_client import CommandError
from tenantserve.cli.billing_admin import JsonObject, run_billing_command
from tenantserve.cli.runner import (
    AdminTokenOption,
    DataDirOption,
    UrlOption,
    fail,
)

price_app = typer.Typer(
    name="price",
    help="The price book: token prices, platform fees, the engine cost rate.",
    no_args_is_help=True,
)
credit_app = typer.Typer(
    name="credit", help="Grant and list tenants' credits.", no_args_is_help=True
)

Usd = Annotated[str | None, typer.Option(show_default=False, help="USD, e.g. 0.40.")]


@price_app.command("set")
def price_set(
    kind: Annotated[str, typer.Option(help="tokens, platform_fee or engine_cost.")] = "tokens",
    model: Annotated[str, typer.Option(help="'*', NAME or NAME@VERSION (tokens).")] = "*",
    adapter_class: Annotated[
        str, typer.Option("--adapter-class", help="base or adapter (tokens).")
    ] = "base",
    tier: Annotated[
        str | None, typer.Option(help="free, standard or premium.", show_default=False)
    ] = None,
    input_price: Annotated[
        str | None,
        typer.Option("--input", help="USD per million input tokens.", show_default=False),
    ] = None,
    cached_input_price: Annotated[
        str | None,
        typer.Option(
            "--cached-input", help="USD per million cached input tokens.", show_default=False
        ),
    ] = None,
    output_price: Annotated[
        str | None,
        typer.Option("--output", help="USD per million output tokens.", show_default=False),
    ] = None,
    usd_per_month: Annotated[
        str | None, typer.Option(help="The tier's monthly fee (platform_fee).", show_default=False)
    ] = None,
    usd_per_engine_hour: Annotated[
        str | None, typer.Option(help="Internal cost (engine_cost).", show_default=False)
    ] = None,
    effective_from: Annotated[
        str | None,
        typer.Option(help="ISO 8601 time or date (UTC); default now.", show_default=False),
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Add a version of a price book entry, in effect from --effective-from."""
    body: JsonObject = {"kind": kind}
    if kind == "tokens":
        body |= {
            "model": model,
            "adapter_class": adapter_class,
            "tier": tier,
            "input_usd_per_mtok": input_price,
            "cached_input_usd_per_mtok": cached_input_price,
            "output_usd_per_mtok": output_price,
        }
    elif kind == "platform_fee":
        body |= {"tier": tier, "usd_per_month": usd_per_month}
    elif kind == "engine_cost":
        body |= {"usd_per_engine_hour": usd_per_engine_hour}
    else:
        fail(CommandError(f"--kind must be tokens, platform_fee or engine_cost, not {kind!r}", 2))
    missing = [k for k, v in body.items() if v is None]
    if missing:
        flags = ", ".join("--" + _flag(k) for k in missing)
        fail(CommandError(f"--kind {kind} needs {flags}", 2))
    if effective_from is not None:
        body["effective_from"] = effective_from
    run_billing_command(data_dir, url, admin_token, lambda admin: admin.set_price(body))


def _flag(field: str) -> str:
    names = {
        "input_usd_per_mtok": "input",
        "cached_input_usd_per_mtok": "cached-input",
        "output_usd_per_mtok": "output",
    }
    return names.get(field, field.replace("_", "-"))


@price_app.command("list")
def price_list(
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print every version of every price book entry."""
    run_billing_command(data_dir, url, admin_token, lambda admin: admin.prices())


@credit_app.command("grant")
def credit_grant(
    tenant: Annotated[str, typer.Option(help="The tenant (ten_...).")],
    amount: Annotated[str, typer.Option(help="USD, e.g. 25.00.")],
    reason: Annotated[str, typer.Option(help="Why (shown on the invoices that draw it).")],
    expires_at: Annotated[
        str | None,
        typer.Option(help="ISO 8601 time or date (UTC); default never.", show_default=False),
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Grant a tenant credit that its invoices draw on (soonest-expiring first)."""
    body: JsonObject = {"tenant_id": tenant, "amount_usd": amount, "reason": reason}
    if expires_at is not None:
        body["expires_at"] = expires_at
    run_billing_command(data_dir, url, admin_token, lambda admin: admin.grant_credit(body))


@credit_app.command("list")
def credit_list(
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant.", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print credit grants with their remaining balance, oldest first."""
    run_billing_command(data_dir, url, admin_token, lambda admin: admin.credits(tenant))
