"""The billing operations the `invoice`, `price` and `credit` commands run, in two modes
with one JSON (`billing/views.py`):

- `DirectBillingAdmin`: the billing services on the data dir's database, in this process,
  each change recorded in the audit log (as `cli:<user>`);
- `HttpBillingAdmin`: the admin API of a running server (`/admin/invoices`, `/admin/prices`,
  `/admin/credits`, `/admin/billing/costs`; Bearer admin token).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tenantserve.audit import actions
from tenantserve.audit.recorder import AuditTrail
from tenantserve.billing.price_service import PriceBookService, parse_time
from tenantserve.billing.service import BillingService
from tenantserve.billing.views import (
    costs_json,
    credit_json,
    credit_note_json,
    engine_cost_json,
    export_json,
    generated_json,
    invoice_csv,
    invoice_json,
    platform_fee_json,
    price_book_json,
    reproduction_json,
    token_price_json,
)
from tenantserve.cli.admin_client import (
    HTTP_TIMEOUT_S,
    CommandError,
    _error_from_response,
    admin_token_for,
    normalize_url,
)
from tenantserve.cli.runner import cli_actor, run_admin_command
from tenantserve.config import Settings
from tenantserve.errors import InvalidRequestError, NotFoundError

if TYPE_CHECKING:
    import httpx

JsonObject = dict[str, Any]
Progress = Callable[[JsonObject], None]


class BillingAdmin(Protocol):
    """Billing administration; every result is the admin API's JSON (CSV as text)."""

    async def generate(self, period: str, tenant_id: str | None, progress: Progress) -> list[Any]:
        """Each tenant's generated invoice; `progress` sees each as it is done."""
        ...

    async def invoice(self, invoice_id: str) -> JsonObject: ...

    async def find(self, tenant_id: str, period: str) -> JsonObject:
        """The tenant's invoice for the period; NotFoundError when there is none."""
        ...

    async def invoice_csv(self, invoice_id: str) -> str: ...

    async def finalize(self, invoice_id: str) -> JsonObject: ...

    async def credit_note(self, invoice_id: str, reason: str, amount: str | None) -> JsonObject: ...

    async def reproduce(self, invoice_id: str) -> JsonObject: ...

    async def export_stripe(self, invoice_id: str) -> JsonObject: ...

    async def costs(self, period: str) -> JsonObject: ...

    async def prices(self) -> JsonObject: ...

    async def set_price(self, body: JsonObject) -> JsonObject:
        """`body` as `POST /admin/prices` takes it (`kind` and its fields)."""
        ...

    async def grant_credit(self, body: JsonObject) -> JsonObject: ...

    async def credits(self, tenant_id: str | None) -> list[Any]: ...


class DirectBillingAdmin:
    """`BillingAdmin` over the billing services, in this process; each change is recorded
    in `trail`."""

    def __init__(
        self, billing: BillingService, prices: PriceBookService, trail: AuditTrail
    ) -> None:
        self._billing = billing
        self._prices = prices
        self._trail = trail

    async def generate(self, period: str, tenant_id: str | None, progress: Progress) -> list[Any]:
        done = await self._billing.generate(
            period, tenant_id, progress=lambda g: progress(generated_json(g))
        )
        data = [generated_json(g) for g in done]
        await self._trail.record(*actions.invoices_generated(period, tenant_id, data))
        return data

    async def invoice(self, invoice_id: str) -> JsonObject:
        return invoice_json(await self._billing.get(invoice_id))

    async def find(self, tenant_id: str, period: str) -> JsonObject:
        return invoice_json(await self._billing.find(tenant_id, period))

    async def invoice_csv(self, invoice_id: str) -> str:
        return invoice_csv(await self._billing.get(invoice_id))

    async def finalize(self, invoice_id: str) -> JsonObject:
        out = invoice_json(await self._billing.finalize(invoice_id))
        await self._trail.record(*actions.invoice_finalized(out))
        return out

    async def credit_note(self, invoice_id: str, reason: str, amount: str | None) -> JsonObject:
        out = credit_note_json(await self._billing.credit_note(invoice_id, reason, amount))
        await self._trail.record(*actions.credit_note_issued(out))
        return out

    async def reproduce(self, invoice_id: str) -> JsonObject:
        return reproduction_json(await self._billing.reproduce(invoice_id))

    async def export_stripe(self, invoice_id: str) -> JsonObject:
        out = export_json(invoice_id, await self._billing.export(invoice_id))
        await self._trail.record(*actions.invoice_exported(out))
        return out

    async def costs(self, period: str) -> JsonObject:
        return costs_json(await self._billing.costs(period))

    async def prices(self) -> JsonObject:
        return price_book_json(await self._prices.book())

    async def set_price(self, body: JsonObject) -> JsonObject:
        out = await self._set_price(body)
        await self._trail.record(*actions.price_set(out))
        return out

    async def _set_price(self, body: JsonObject) -> JsonObject:
        kind, at = body.get("kind"), body.get("effective_from")
        if kind == "tokens":
            return token_price_json(
                await self._prices.set_token_price(
                    body.get("model", "*"),
                    body.get("adapter_class", "base"),
                    body["tier"],
                    body["input_usd_per_mtok"],
                    body["cached_input_usd_per_mtok"],
                    body["output_usd_per_mtok"],
                    at,
                )
            )
        if kind == "platform_fee":
            fee = await self._prices.set_platform_fee(body["tier"], body["usd_per_month"], at)
            return platform_fee_json(fee)
        if kind == "engine_cost":
            cost = await self._prices.set_engine_cost(body["usd_per_engine_hour"], at)
            return engine_cost_json(cost)
        raise InvalidRequestError(f"kind must be tokens, platform_fee or engine_cost: {kind!r}")

    async def grant_credit(self, body: JsonObject) -> JsonObject:
        grant = await self._billing.grant_credit(
            body["tenant_id"],
            body["amount_usd"],
            body["reason"],
            parse_time(body.get("expires_at"), "expires_at"),
        )
        out = credit_json(grant)
        await self._trail.record(*actions.credit_granted(out))
        return out

    async def credits(self, tenant_id: str | None) -> list[Any]:
        return [credit_json(g) for g in await self._billing.credits(tenant_id)]


class HttpBillingAdmin:
    """`BillingAdmin` over a running server's admin API."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def generate(self, period: str, tenant_id: str | None, progress: Progress) -> list[Any]:
        body: JsonObject = {"period": period}
        if tenant_id is not None:
            body["tenant_id"] = tenant_id
        data = _data(await self._call("POST", "/admin/invoices/generate", body))
        for item in data:
            progress(item)
        return data

    async def invoice(self, invoice_id: str) -> JsonObject:
        return _object(await self._call("GET", f"/admin/invoices/{invoice_id}"))

    async def find(self, tenant_id: str, period: str) -> JsonObject:
        params = {"tenant_id": tenant_id, "period": period}
        found = _data(await self._call("GET", "/admin/invoices", params=params))
        if not found:
            raise NotFoundError(f"no invoice for tenant {tenant_id!r} in {period}")
        return await self.invoice(str(found[0]["id"]))

    async def invoice_csv(self, invoice_id: str) -> str:
        path = f"/admin/invoices/{invoice_id}"
        return str(await self._call("GET", path, params={"format": "csv"}, text=True))

    async def finalize(self, invoice_id: str) -> JsonObject:
        return _object(await self._call("POST", f"/admin/invoices/{invoice_id}/finalize"))

    async def credit_note(self, invoice_id: str, reason: str, amount: str | None) -> JsonObject:
        body: JsonObject = {"reason": reason}
        if amount is not None:
            body["amount_usd"] = amount
        path = f"/admin/invoices/{invoice_id}/credit-notes"
        return _object(await self._call("POST", path, body))

    async def reproduce(self, invoice_id: str) -> JsonObject:
        return _object(await self._call("GET", f"/admin/invoices/{invoice_id}/reproduce"))

    async def export_stripe(self, invoice_id: str) -> JsonObject:
        return _object(await self._call("POST", f"/admin/invoices/{invoice_id}/export/stripe"))

    async def costs(self, period: str) -> JsonObject:
        params = {"period": period}
        return _object(await self._call("GET", "/admin/billing/costs", params=params))

    async def prices(self) -> JsonObject:
        return _object(await self._call("GET", "/admin/prices"))

    async def set_price(self, body: JsonObject) -> JsonObject:
        return _object(await self._call("POST", "/admin/prices", body))

    async def grant_credit(self, body: JsonObject) -> JsonObject:
        return _object(await self._call("POST", "/admin/credits", body))

    async def credits(self, tenant_id: str | None) -> list[Any]:
        params = {"tenant_id": tenant_id} if tenant_id else None
        return _data(await self._call("GET", "/admin/credits", params=params))

    async def _call(
        self,
        method: str,
        path: str,
        body: JsonObject | None = None,
        params: dict[str, str] | None = None,
        text: bool = False,
    ) -> Any:
        import httpx

        base = str(self._http.base_url).rstrip("/")
        try:
            response = await self._http.request(method, path, json=body, params=params)
        except httpx.TransportError as e:
            raise CommandError(
                f"cannot reach tenantserve at {base} ({type(e).__name__}: {e}); "
                "start it with `tenantserve up` or check --url / TENANTSERVE_URL"
            ) from e
        if not response.is_success:
            raise _error_from_response(method, path, base, response)
        if text:
            return response.text
        try:
            return response.json()
        except ValueError as e:
            raise CommandError(f"{method} {path} answered without JSON") from e


def _object(data: Any) -> JsonObject:
    if not isinstance(data, dict):
        raise CommandError(f"unexpected answer from the admin API: {data!r:.200}")
    return data


def _data(data: Any) -> list[Any]:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise CommandError(f"unexpected answer from the admin API: {data!r:.200}")
    return list(data["data"])


@asynccontextmanager
async def open_billing_admin(
    settings: Settings, url: str | None, admin_token: str | None
) -> AsyncIterator[BillingAdmin]:
    """The admin API at `url` when given, else the data dir's database directly (opened,
    migrated, disposed on exit)."""
    if url is not None:
        import httpx

        headers = {"Authorization": f"Bearer {admin_token_for(settings, admin_token)}"}
        async with httpx.AsyncClient(
            base_url=normalize_url(url), headers=headers, timeout=HTTP_TIMEOUT_S
        ) as http:
            yield HttpBillingAdmin(http)
        return
    if admin_token is not None:
        raise CommandError("--admin-token only applies with --url", exit_code=2)
    from sqlalchemy.exc import SQLAlchemyError

    from tenantserve.bootstrap import build_billing, open_tenancy

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
        billing = build_billing(settings, tenancy.db)
        trail = AuditTrail(tenancy.audit, cli_actor())
        yield DirectBillingAdmin(billing.service, billing.prices, trail)
    except SQLAlchemyError as e:
        raise CommandError(f"{where} failed ({type(e).__name__}: {e})") from e
    finally:
        await tenancy.db.dispose()


def run_billing_command(
    data_dir: Path | None,
    url: str | None,
    admin_token: str | None,
    operation: Callable[[BillingAdmin], Awaitable[Any]],
    not_found_hint: str | None = None,
) -> None:
    """`run_admin_command` on the billing admin (direct, or the admin API with `url`)."""
    run_admin_command(
        data_dir,
        lambda settings: open_billing_admin(settings, url, admin_token),
        operation,
        not_found_hint=not_found_hint,
    )
