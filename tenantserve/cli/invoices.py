"""`tenantserve invoice generate|show|finalize|credit-note|reproduce|export|costs`.

Each command prints the admin API's JSON on stdout (`show --format csv`: the CSV).
Without `--url` it works on the data dir's database directly; with `--url` (or
TENANTSERVE_URL) it goes through the admin API of that server. `generate` reports each
tenant on stderr as it is done. Errors are one line on stderr: exit code 2 for bad input
(a finalized invoice changed included), 1 for everything else.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Annotated, Any

import typer

from tenantserve.cli.admin_client import CommandError
from tenantserve.cli.billing_admin import BillingAdmin, JsonObject, run_billing_command
from tenantserve.cli.runner import (
    AdminTokenOption,
    DataDirOption,
    UrlOption,
    fail,
)

invoice_app = typer.Typer(
    name="invoice",
    help="Generate, show, finalize, credit and export monthly invoices; the cost report.",
    no_args_is_help=True,
)

PeriodOption = Annotated[str, typer.Option("--period", help="The month, YYYY-MM (UTC).")]
InvoiceArg = Annotated[str, typer.Argument(metavar="ID", help="The invoice id (inv_...).")]
LIST_HINT = "`tenantserve invoice generate --period YYYY-MM` creates the period's invoices"


def _progress(item: JsonObject) -> None:
    print(
        f"[tenantserve] {item.get('tenant_id')}: {item.get('outcome')} {item.get('id')} "
        f"total {item.get('total_usd')} {str(item.get('currency', 'usd')).upper()}",
        file=sys.stderr,
        flush=True,
    )


@invoice_app.command("generate")
def invoice_generate(
    period: PeriodOption,
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant (ten_...).", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Create each tenant's draft invoice for PERIOD, or recompute it in place (same id);
    finalized invoices are left alone."""
    run_billing_command(
        data_dir,
        url,
        admin_token,
        lambda admin: admin.generate(period, tenant, _progress),
        LIST_HINT,
    )


@invoice_app.command("show")
def invoice_show(
    invoice_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="The invoice id.", show_default=False)
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="With --period: that tenant's.", show_default=False)
    ] = None,
    period: Annotated[
        str | None, typer.Option(help="With --tenant: YYYY-MM.", show_default=False)
    ] = None,
    format: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print an invoice with its lines: ID, or --tenant T --period P."""
    if format not in ("json", "csv"):
        fail(CommandError(f"--format must be json or csv, not {format!r}", 2))
    if (invoice_id is None) == (tenant is None or period is None):
        fail(CommandError("name the invoice: ID, or --tenant and --period", 2))

    async def resolve(admin: BillingAdmin) -> str:
        if invoice_id is not None:
            return invoice_id
        assert tenant is not None and period is not None
        return str((await admin.find(tenant, period))["id"])

    async def show_json(admin: BillingAdmin) -> Any:
        return await admin.invoice(await resolve(admin))

    async def show_csv(admin: BillingAdmin) -> Any:
        return await admin.invoice_csv(await resolve(admin))

    if format == "json":
        run_billing_command(data_dir, url, admin_token, show_json, LIST_HINT)
        return
    captured: list[str] = []

    async def capture(admin: BillingAdmin) -> None:
        captured.append(await show_csv(admin))

    # run_admin_command prints JSON; the CSV is printed as it is instead.
    with contextlib.redirect_stdout(io.StringIO()):
        run_billing_command(data_dir, url, admin_token, capture, LIST_HINT)
    sys.stdout.write(captured[0])


@invoice_app.command("finalize")
def invoice_finalize(
    invoice_id: InvoiceArg,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Finalize a draft once its period is over; it never changes after that."""
    run_billing_command(
        data_dir, url, admin_token, lambda admin: admin.finalize(invoice_id), LIST_HINT
    )


@invoice_app.command("credit-note")
def invoice_credit_note(
    invoice_id: InvoiceArg,
    reason: Annotated[str, typer.Option(help="Why (shown to the tenant).")],
    amount: Annotated[
        str | None,
        typer.Option(
            help="USD, e.g. 12.50; without it: what recomputing the invoice from today's "
            "data shows was over-billed.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Correct a finalized invoice; the amount is credited to the tenant's next invoices."""
    run_billing_command(
        data_dir,
        url,
        admin_token,
        lambda admin: admin.credit_note(invoice_id, reason, amount),
        LIST_HINT,
    )


@invoice_app.command("reproduce")
def invoice_reproduce(
    invoice_id: InvoiceArg,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Recompute the usage quantities from the usage events and compare (`matches`)."""

    async def check(admin: BillingAdmin) -> Any:
        result = await admin.reproduce(invoice_id)
        if not result.get("matches"):
            print(f"[tenantserve] {invoice_id} does not match its events", file=sys.stderr)
        return result

    run_billing_command(data_dir, url, admin_token, check, LIST_HINT)


@invoice_app.command("export")
def invoice_export(
    invoice_id: InvoiceArg,
    stripe: Annotated[bool, typer.Option("--stripe", help="Export to Stripe.")] = False,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Send a finalized invoice to the payment provider (safe to repeat: same idempotency
    keys). Needs TENANTSERVE_STRIPE_API_KEY where it runs (the server, with --url)."""
    if not stripe:
        fail(CommandError("name the provider: --stripe", 2))
    run_billing_command(
        data_dir, url, admin_token, lambda admin: admin.export_stripe(invoice_id), LIST_HINT
    )


@invoice_app.command("costs")
def invoice_costs(
    period: PeriodOption,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Per tenant: engine-seconds, their internal cost, the invoice's revenue, the margin."""
    run_billing_command(data_dir, url, admin_token, lambda admin: admin.costs(period), LIST_HINT)
