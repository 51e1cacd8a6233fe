"""A fake Stripe API on a free loopback port: records every request (method, path, form
fields, headers) and answers with Stripe-shaped JSON. Like Stripe, a repeated
Idempotency-Key gets the first answer again; customers are searchable by metadata."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class FakeStripe:
    """The server's state: what it was sent and what it made."""

    url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    invoice_items: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, req: RecordedRequest) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(req)
            key = req.idempotency_key
            if key is not None and key in self.by_key:
                return 200, self.by_key[key]
            status, body = self._route(req)
            if key is not None and status == 200:
                self.by_key[key] = body
            return status, body

    def _route(self, req: RecordedRequest) -> tuple[int, dict[str, Any]]:
        if req.method == "GET" and req.path == "/v1/customers/search":
            match = re.search(r"metadata\['tenant_id'\]:'([^']+)'", req.query.get("query", ""))
            tenant = match.group(1) if match else None
            found = [c for c in self.customers if c["metadata"].get("tenant_id") == tenant]
            return 200, {
                "object": "search_result",
                "data": found,
                "has_more": False,
                "url": req.path,
            }
        if req.method == "POST" and req.path == "/v1/customers":
            customer = {
                "id": f"cus_{len(self.customers) + 1:04d}",
                "object": "customer",
                "name": req.form.get("name"),
                "metadata": _metadata(req.form),
            }
            self.customers.append(customer)
            return 200, customer
        if req.method == "POST" and req.path == "/v1/invoiceitems":
            item = {
                "id": f"ii_{len(self.invoice_items) + 1:04d}",
                "object": "invoiceitem",
                "customer": req.form.get("customer"),
                "unit_amount_decimal": req.form.get("unit_amount_decimal"),
                "metadata": _metadata(req.form),
            }
            self.invoice_items.append(item)
            return 200, item
        if req.method == "POST" and req.path == "/v1/invoices":
            invoice = {
                "id": f"in_{len(self.invoices) + 1:04d}",
                "object": "invoice",
                "customer": req.form.get("customer"),
                "status": "draft",
                "metadata": _metadata(req.form),
            }
            self.invoices.append(invoice)
            return 200, invoice
        return 404, {"error": {"type": "invalid_request_error", "message": "no such route"}}


def _metadata(form: dict[str, str]) -> dict[str, str]:
    return {k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")}


@contextmanager
def fake_stripe() -> Iterator[FakeStripe]:
    """A running fake Stripe; its `url` is the SDK's api base."""
    state = FakeStripe()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            req = RecordedRequest(
                method=self.command,
                path=split.path,
                form=dict(parse_qsl(raw, keep_blank_values=True)),
                query=dict(parse_qsl(split.query, keep_blank_values=True)),
                headers={k.lower(): v for k, v in self.headers.items()},
            )
            status, body = state.answer(req)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _handle
        do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
