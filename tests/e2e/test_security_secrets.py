"""Credentials never leak: API keys (whole, or their secret part), JWTs (whole, or their
signature), the admin token and the JWT signing secret appear in no log line (the
gateway's, captured at DEBUG, and the engine process's stderr), no file of the data dir
(request logs, databases, outbox, artifacts), no metrics scrape, no trace span, and no
response, error messages for bad credentials included.

Traffic with known credentials runs through a real server first: successes with a key and
a JWT (whole answers and streams), refusals (a wrong secret for a real key id, a revoked
key, an expired and a tampered JWT, the admin token near-missed, keys in the wrong
header, in the query string, as a tenant key on admin routes), and admin calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy
from tenantserve.observability.config import ObservabilityConfig
from tenantserve.tenancy.keys import parse_key
from tests.helpers.server import (
    ADMIN_TOKEN,
    JWT_SECRET,
    Running,
    add_tenant,
    serve,
    server_settings,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The test's own HTTP clients log the URLs they call (the query-string credentials
# included): theirs are not the server's logs.
CLIENT_LOGGERS = ("httpx", "httpcore")
TRACES_ENDPOINT = "http://127.0.0.1:9/in-memory"  # never reached: spans stay in memory


@dataclass
class Traced:
    """The running server and the spans it exported (None: no tracing in this build)."""

    running: Running
    spans: Any = None  # an InMemorySpanExporter


def _in_memory_tracing(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Route the tracer's OTLP exporter into memory; None when tracing does not exist."""
    try:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from tenantserve.observability.tracing import RequestTracer
    except ImportError:
        return None
    exporter = InMemorySpanExporter()

    def to_memory(endpoint: str | None) -> RequestTracer:
        if not endpoint:
            return RequestTracer()
        return RequestTracer.with_exporter(exporter, batch=False)

    monkeypatch.setattr(RequestTracer, "to_otlp", staticmethod(to_memory))
    return exporter


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def traced(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Traced]:
    monkeypatch = pytest.MonkeyPatch()
    spans = _in_memory_tracing(monkeypatch)
    settings = server_settings(tmp_path_factory.mktemp("data"), tiny_model_dir)
    if spans is not None:
        observability = replace(ObservabilityConfig(), otlp_endpoint=TRACES_ENDPOINT)
        settings = replace(settings, observability=observability)
    tenancy = await open_tenancy(settings)
    try:
        acme = await add_tenant(tenancy.service, "acme")
        globex = await add_tenant(tenancy.service, "globex")
    finally:
        await tenancy.db.dispose()
    try:
        async with serve(settings) as (url, service):
            yield Traced(Running(url=url, service=service, acme=acme, globex=globex), spans)
    finally:
        monkeypatch.undo()


def _jwt(tenant_id: str, exp_offset_s: float, secret: str = JWT_SECRET) -> str:
    claims = {"tenant_id": tenant_id, "aud": "tenantserve", "exp": int(time.time() + exp_offset_s)}
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class Secrets:
    """Every credential the traffic used, by name, and what the traffic got back."""

    values: dict[str, str] = field(default_factory=dict)
    responses: list[str] = field(default_factory=list)

    def add_key(self, name: str, key: str) -> None:
        """The whole key and its secret part (`ts-<key id part>-<secret>`)."""
        self.values[name] = key
        self.values[f"{name} (secret part)"] = parse_key(key).secret

    def add_jwt(self, name: str, token: str) -> None:
        self.values[name] = token
        self.values[f"{name} (signature)"] = token.rsplit(".", 1)[1]

    def found_in(self, text: str) -> list[str]:
        return [name for name, value in self.values.items() if value in text]


async def _traffic(run: Running, secrets: Secrets) -> None:
    """Successes and refusals with every kind of credential."""
    acme = run.acme
    revoked = await run.tenancy.create_key(acme.id)
    key_id = acme.key_id
    presented = parse_key(acme.key)
    wrong_secret = acme.key.removesuffix(presented.secret) + "W" * len(presented.secret)
    good_jwt = _jwt(acme.id, 300)
    secrets.add_key("acme's key", acme.key)
    secrets.add_key("globex's key", run.globex.key)
    secrets.add_key("a revoked key", revoked.plaintext)
    secrets.add_key("a wrong secret for a real key id", wrong_secret)
    secrets.add_jwt("a JWT", good_jwt)
    secrets.add_jwt("an expired JWT", _jwt(acme.id, -60))
    secrets.add_jwt("a JWT signed with another secret", _jwt(acme.id, 300, "x" * 40))
    secrets.values["the admin token"] = ADMIN_TOKEN
    secrets.values["a near miss of the admin token"] = ADMIN_TOKEN[:-1] + "Z"
    secrets.values["the JWT signing secret"] = JWT_SECRET

    chat = {"model": run.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    text = {"model": run.model, "prompt": "Hi", "max_tokens": 2}
    stream = {**text, "stream": True, "stream_options": {"include_usage": True}}
    answers: list[httpx.Response] = []
    async with run.admin() as admin:
        answers.append(await admin.delete(f"/admin/keys/{revoked.key.id}"))
        made = await admin.post(f"/admin/tenants/{acme.id}/keys", json={})
        assert made.status_code == 201, made.text
        secrets.add_key("a key made through the admin API", made.json()["key"])
        for path in ("/admin/tenants", f"/admin/tenants/{acme.id}/keys", "/admin/events"):
            answers.append(await admin.get(path))
        for path in ("/metrics", "/admin/audit", "/admin/requests"):
            answers.append(await admin.get(path))
    for credential in (acme.key, good_jwt, made.json()["key"]):
        async with run.http(key=credential) as http:
            answers.append(await http.post("/v1/chat/completions", json=chat))
            answers.append(await http.post("/v1/completions", json=text))
            answers.append(await http.post("/v1/completions", json=stream))
            answers.append(await http.get("/v1/models"))
            answers.append(await http.get("/v1/requests"))
            answers.append(await http.get("/v1/usage"))
    refused = [
        revoked.plaintext,
        wrong_secret,
        secrets.values["an expired JWT"],
        secrets.values["a JWT signed with another secret"],
        ADMIN_TOKEN,  # not a tenant credential
    ]
    for credential in refused:
        async with run.http(key=credential) as http:
            answers.append(await http.post("/v1/chat/completions", json=chat))
            answers.append(await http.get("/v1/models"))
    async with httpx.AsyncClient(base_url=run.url, timeout=60) as raw:
        for headers in (
            {"Authorization": acme.key},  # no scheme
            {"Authorization": f"Basic {acme.key}"},
            {"Authorization": f"Bearer {acme.key} {acme.key}"},
            {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}Z"},
            {"Authorization": f"Bearer {acme.key}"},  # a tenant key on an admin route
            {"X-Api-Key": acme.key},
        ):
            answers.append(await raw.get("/admin/tenants", headers=headers))
            answers.append(await raw.post("/v1/completions", json=text, headers=headers))
        answers.append(await raw.get("/v1/models", params={"api_key": acme.key}))
        answers.append(await raw.get(f"/admin/keys/{key_id}", params={"token": ADMIN_TOKEN}))
    served = [a for a in answers if a.status_code < 400]
    assert len(served) >= 12, [(a.request.url.path, a.status_code) for a in answers]
    # Let the request log and the usage pipeline write what they write.
    async with run.admin() as admin:
        for _ in range(50):
            usage = (await admin.get("/admin/usage", params={"tenant": acme.id})).json()
            if usage["total"]["requests"] >= 9:
                break
            await asyncio.sleep(0.1)
    secrets.responses = [
        f"{a.request.method} {a.request.url.path} -> {a.status_code} {dict(a.headers)} {a.text}"
        for a in answers
        if not (a.request.method == "POST" and a.request.url.path.endswith("/keys"))
    ]


def _data_dir_files(root: Path) -> dict[str, str]:
    """Every file under the data dir, decoded leniently (databases included)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = path.read_bytes().decode("latin-1")
    return out


async def test_no_credential_appears_in_logs_files_metrics_spans_or_responses(
    traced: Traced, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    run = traced.running
    caplog.set_level(logging.DEBUG)
    secrets = Secrets()
    await _traffic(run, secrets)

    sinks: dict[str, str] = {}
    sinks["log records"] = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.args!r} {r.__dict__!r}"
        for r in caplog.records
        if not r.name.startswith(CLIENT_LOGGERS)
    )
    out, err = capfd.readouterr()
    sinks["stdout / stderr (the engine process's too)"] = out + err
    for name, content in _data_dir_files(run.service.settings.data_dir).items():
        sinks[f"data dir: {name}"] = content
    async with run.admin() as admin:
        metrics = await admin.get("/metrics")
    if metrics.status_code != 404:
        assert metrics.status_code == 200, metrics.text
        sinks["/metrics"] = metrics.text
    if traced.spans is not None:
        spans = traced.spans.get_finished_spans()
        assert spans, "tracing is on, yet no span was exported"
        sinks["trace spans"] = "\n".join(span.to_json() for span in spans)
    for i, response in enumerate(secrets.responses):
        sinks[f"response {i}: {response[:80]}"] = response

    leaks = {sink: found for sink, text in sinks.items() if (found := secrets.found_in(text))}
    assert not leaks, "\n".join(f"{sink}: {names}" for sink, names in leaks.items())
    # The request log was among what was searched, and it saw the traffic.
    request_logs = [text for name, text in sinks.items() if name.startswith("data dir: logs/")]
    assert any(run.acme.id in text for text in request_logs), list(sinks)
