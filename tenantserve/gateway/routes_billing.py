"""Billing over HTTP: a tenant's own invoices, and the operators' billing admin.

Tenant (Bearer API key or JWT; only the caller's own invoices exist for it: another
tenant's id is 404, exactly like an unknown one):

    GET  /v1/invoices                         the caller's invoices     -> {"data": [invoice]}
    GET  /v1/invoices/{id}[?format=csv]       one, with its lines       -> invoice | text/csv

Admin (Bearer admin token):

    POST /admin/invoices/generate             {"period", "tenant_id"?} -> {"data": [generated]}
    GET  /admin/invoices[?tenant_id=&period=]                          -> {"data": [invoice]}
    GET  /admin/invoices/{id}[?format=csv]                             -> invoice | text/csv
    POST /admin/invoices/{id}/finalize                                 -> invoice
    POST /admin/invoices/{id}/credit-notes    {"reason", "amount_usd"?} -> 201 credit note
    GET  /admin/invoices/{id}/reproduce       quantities from the events -> reproduction
    POST /admin/invoices/{id}/export/stripe   (idempotent)             -> export
    GET  /admin/billing/costs?period=         engine cost vs revenue   -> cost report
    GET  /admin/prices                        every version            -> price book
    POST /admin/prices                        {"kind": "tokens" | "platform_fee" |
                                               "engine_cost", ...}     -> 201 the version
    POST /admin/credits                       {"tenant_id", "amount_usd", "reason",
                                               "expires_at"?}          -> 201 grant
    GET  /admin/credits[?tenant_id=]                                   -> {"data": [grant]}

JSON as `billing/views.py` writes it; money as decimal strings, and amounts must be sent
as strings (or integers), never floats. Errors in OpenAI's shape: bad fields 400, unknown
ids 404, a finalized invoice changed (or a draft credited or exported) 409, the payment
provider failing 502, no provider configured 503. Every admin change (generate, finalize,
credit notes, exports, prices, credits) is recorded in the audit log once done.
"""

from __future__ import annotations

import hmac
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from tenantserve.audit import actions
from tenantserve.audit.recorder import ADMIN_ACTOR, AuditRecorder, NullRecorder
from tenantserve.billing.invoice import Invoice, InvoiceStateError
from tenantserve.billing.price_service import PriceBookService, parse_time
from tenantserve.billing.service import BillingService
from tenantserve.billing.stripe_export import ExportError
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
from tenantserve.errors import AuthenticationError, ConfigError
from tenantserve.gateway.auth import Authenticator, bearer_credential
from tenantserve.gateway.errors import ApiError, parse_body

Amount = str | int  # a decimal string ("12.50") or a whole number; never a float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Generate(_Strict):
    period: str
    tenant_id: str | None = None


class CreditNoteCreate(_Strict):
    reason: str
    amount_usd: Amount | None = None


class PriceSet(_Strict):
    kind: Literal["tokens", "platform_fee", "engine_cost"]
    effective_from: str | None = None
    model: str = "*"
    adapter_class: str = "base"
    tier: str | None = None
    input_usd_per_mtok: Amount | None = None
    cached_input_usd_per_mtok: Amount | None = None
    output_usd_per_mtok: Amount | None = None
    usd_per_month: Amount | None = None
    usd_per_engine_hour: Amount | None = None


class CreditGrantCreate(_Strict):
    tenant_id: str
    amount_usd: Amount
    reason: str
    expires_at: str | None = None


def _required(value: Any, name: str) -> Any:
    if value is None:
        raise ApiError(400, f"{name} is required", param=name)
    return value


def _invoice_response(invoice: Invoice, format: str | None) -> Response:
    if format in (None, "json"):
        return JSONResponse(invoice_json(invoice))
    if format == "csv":
        return Response(
            invoice_csv(invoice),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{invoice.id}-{invoice.period}.csv"'
            },
        )
    raise ApiError(400, f"format must be json or csv, not {format!r}", param="format")


class BillingRoutes:
    """Handlers of `/v1/invoices...` (the tenant's) and the billing admin routes."""

    def __init__(
        self,
        billing: BillingService,
        prices: PriceBookService,
        auth: Authenticator,
        admin_token: str,
        audit: AuditRecorder | None = None,
    ) -> None:
        self.billing = billing
        self.prices = prices
        self.auth = auth
        self.audit = audit if audit is not None else NullRecorder()
        self._token = admin_token.encode()

    def install(self, app: FastAPI) -> None:
        """Add the billing routes to `app`."""
        add = app.add_api_route
        add("/v1/invoices", self.tenant_invoices, methods=["GET"])
        add("/v1/invoices/{invoice_id}", self.tenant_invoice, methods=["GET"])
        add("/admin/invoices/generate", self.generate, methods=["POST"])
        add("/admin/invoices", self.list_invoices, methods=["GET"])
        add("/admin/invoices/{invoice_id}", self.get_invoice, methods=["GET"])
        add("/admin/invoices/{invoice_id}/finalize", self.finalize, methods=["POST"])
        add("/admin/invoices/{invoice_id}/credit-notes", self.credit_note, methods=["POST"])
        add("/admin/invoices/{invoice_id}/reproduce", self.reproduce, methods=["GET"])
        add("/admin/invoices/{invoice_id}/export/stripe", self.export_stripe, methods=["POST"])
        add("/admin/billing/costs", self.costs, methods=["GET"])
        add("/admin/prices", self.list_prices, methods=["GET"])
        add("/admin/prices", self.set_price, methods=["POST"])
        add("/admin/credits", self.grant_credit, methods=["POST"])
        add("/admin/credits", self.list_credits, methods=["GET"])

    async def tenant_invoices(self, request: Request) -> dict[str, Any]:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        invoices = await self.billing.list_invoices(tenant_id=ctx.tenant_id)
        return {"object": "list", "data": [invoice_json(i, with_lines=False) for i in invoices]}

    async def tenant_invoice(
        self, request: Request, invoice_id: str, format: str | None = None
    ) -> Response:
        ctx = await self.auth.authenticate(request.headers.get("authorization"))
        return _invoice_response(await self.billing.get(invoice_id, ctx.tenant_id), format)

    async def generate(self, request: Request) -> dict[str, Any]:
        self._check(request)
        body = await parse_body(request, Generate)
        try:
            generated = await self.billing.generate(body.period, body.tenant_id)
        except InvoiceStateError as e:
            raise ApiError(409, str(e), code=e.code) from e
        data = [generated_json(g) for g in generated]
        await self._record(actions.invoices_generated(body.period, body.tenant_id, data))
        return {"object": "list", "data": data}

    async def list_invoices(
        self, request: Request, tenant_id: str | None = None, period: str | None = None
    ) -> dict[str, Any]:
        self._check(request)
        invoices = await self.billing.list_invoices(tenant_id, period)
        return {"object": "list", "data": [invoice_json(i, with_lines=False) for i in invoices]}

    async def get_invoice(
        self, request: Request, invoice_id: str, format: str | None = None
    ) -> Response:
        self._check(request)
        return _invoice_response(await self.billing.get(invoice_id), format)

    async def finalize(self, request: Request, invoice_id: str) -> dict[str, Any]:
        self._check(request)
        try:
            out = invoice_json(await self.billing.finalize(invoice_id))
        except InvoiceStateError as e:
            raise ApiError(409, str(e), code=e.code) from e
        await self._record(actions.invoice_finalized(out))
        return out

    async def credit_note(self, request: Request, invoice_id: str) -> JSONResponse:
        self._check(request)
        body = await parse_body(request, CreditNoteCreate)
        try:
            note = await self.billing.credit_note(invoice_id, body.reason, body.amount_usd)
        except InvoiceStateError as e:
            raise ApiError(409, str(e), code=e.code) from e
        out = credit_note_json(note)
        await self._record(actions.credit_note_issued(out))
        return JSONResponse(out, status_code=201)

    async def reproduce(self, request: Request, invoice_id: str) -> dict[str, Any]:
        self._check(request)
        return reproduction_json(await self.billing.reproduce(invoice_id))

    async def export_stripe(self, request: Request, invoice_id: str) -> dict[str, Any]:
        self._check(request)
        try:
            result = await self.billing.export(invoice_id)
        except InvoiceStateError as e:
            raise ApiError(409, str(e), code=e.code) from e
        except ConfigError as e:
            raise ApiError(503, str(e), "server_error", code="not_configured") from e
        except ExportError as e:
            raise ApiError(502, str(e), "server_error", code="payment_provider_error") from e
        out = export_json(invoice_id, result)
        await self._record(actions.invoice_exported(out))
        return out

    async def costs(self, request: Request, period: str | None = None) -> dict[str, Any]:
        self._check(request)
        return costs_json(await self.billing.costs(_required(period, "period")))

    async def list_prices(self, request: Request) -> dict[str, Any]:
        self._check(request)
        return price_book_json(await self.prices.book())

    async def set_price(self, request: Request) -> JSONResponse:
        self._check(request)
        body = await parse_body(request, PriceSet)
        out: dict[str, Any]
        if body.kind == "tokens":
            price = await self.prices.set_token_price(
                body.model,
                body.adapter_class,
                _required(body.tier, "tier"),
                _required(body.input_usd_per_mtok, "input_usd_per_mtok"),
                _required(body.cached_input_usd_per_mtok, "cached_input_usd_per_mtok"),
                _required(body.output_usd_per_mtok, "output_usd_per_mtok"),
                body.effective_from,
            )
            out = token_price_json(price)
        elif body.kind == "platform_fee":
            fee = await self.prices.set_platform_fee(
                _required(body.tier, "tier"),
                _required(body.usd_per_month, "usd_per_month"),
                body.effective_from,
            )
            out = platform_fee_json(fee)
        else:
            cost = await self.prices.set_engine_cost(
                _required(body.usd_per_engine_hour, "usd_per_engine_hour"), body.effective_from
            )
            out = engine_cost_json(cost)
        await self._record(actions.price_set(out))
        return JSONResponse(out, status_code=201)

    async def grant_credit(self, request: Request) -> JSONResponse:
        self._check(request)
        body = await parse_body(request, CreditGrantCreate)
        grant = await self.billing.grant_credit(
            body.tenant_id,
            body.amount_usd,
            body.reason,
            parse_time(body.expires_at, "expires_at"),
        )
        out = credit_json(grant)
        await self._record(actions.credit_granted(out))
        return JSONResponse(out, status_code=201)

    async def list_credits(self, request: Request, tenant_id: str | None = None) -> dict[str, Any]:
        self._check(request)
        grants = await self.billing.credits(tenant_id)
        return {"object": "list", "data": [credit_json(g) for g in grants]}

    async def _record(self, action: actions.Action) -> None:
        await self.audit.record(ADMIN_ACTOR, *action)

    def _check(self, request: Request) -> None:
        """AuthenticationError (401) unless the request carries the admin token."""
        presented = bearer_credential(request.headers.get("authorization")).encode()
        if not hmac.compare_digest(presented, self._token):
            raise AuthenticationError("invalid admin token")
