"""Hostile requests against a real server: a clear 4xx in OpenAI's shape or bounded
resources, never a 5xx, a crash, an engine restart or a hang.

Complements the body-limit and bad-input tests of `test_tenant_isolation.py` and
`test_http_api.py`: deeply nested and invalid-UTF-8 JSON, absurd sampling parameters,
SSE clients that never read, bodies that trickle in, lie about their length or try to
smuggle a second request past uvicorn's parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tenantserve.bootstrap import open_tenancy
from tests.helpers.server import (
    ADMIN_TOKEN,
    MAX_BODY_BYTES,
    Running,
    add_tenant,
    serve,
    server_settings,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

BODY_TIMEOUT_S = 1.5  # the test server's: a body must have arrived by then


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """conftest's server, with a short body timeout (the slowloris tests wait it out)."""
    settings = replace(
        server_settings(tmp_path_factory.mktemp("data"), tiny_model_dir),
        body_timeout_s=BODY_TIMEOUT_S,
    )
    tenancy = await open_tenancy(settings)
    try:
        acme = await add_tenant(tenancy.service, "acme")
        globex = await add_tenant(tenancy.service, "globex")
    finally:
        await tenancy.db.dispose()
    async with serve(settings) as (url, service):
        yield Running(url=url, service=service, acme=acme, globex=globex)


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


async def _engine_unharmed(running: Running, restarts_before: int) -> None:
    """The engine never restarted, has nothing left running, and still serves."""
    assert running.engine.num_restarts == restarts_before
    async with asyncio.timeout(10):
        while running.engine.num_unfinished_requests:
            await asyncio.sleep(0.05)
    async with running.http() as http:
        body = {"model": running.model, "prompt": "Hi", "max_tokens": 1}
        assert (await http.post("/v1/completions", json=body)).status_code == 200


# -- JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 10_000])
async def test_deeply_nested_json_is_a_400_on_every_json_route(
    running: Running, depth: int
) -> None:
    nested = b"[" * depth + b"]" * depth
    in_field = b'{"model": "m", "prompt": "x", "user": ' + nested + b"}"
    quotas = b'{"quotas": [' + b'{"a":' * depth + b"1" + b"}" * depth + b"]}"
    assert len(quotas) < MAX_BODY_BYTES  # the parser's problem, not the body limit's
    async with running.http() as http, running.admin() as admin:
        answers = [
            await http.post("/v1/completions", content=nested),
            await http.post("/v1/chat/completions", content=in_field),
            await http.post("/v1/completions", content=in_field),
            await admin.patch(f"/admin/tenants/{running.acme.id}", content=quotas),
            await admin.post("/admin/tenants", content=nested),
        ]
    for r in answers:
        _error(r, 400)


async def test_nesting_beyond_the_body_limit_is_a_413_before_parsing(running: Running) -> None:
    depth = 100_000  # 200 kB of brackets
    assert 2 * depth > MAX_BODY_BYTES
    async with running.http() as http:
        r = await http.post("/v1/chat/completions", content=b"[" * depth + b"]" * depth)
    assert _error(r, 413)["code"] == "request_too_large"


async def test_invalid_utf8_is_a_400(running: Running) -> None:
    async with running.http() as http, running.admin() as admin:
        answers = [
            await http.post(
                "/v1/chat/completions",
                content=b'{"model": "\xff\xfe", "messages": [{"role": "user", "content": "hi"}]}',
            ),
            await http.post(
                "/v1/completions",
                content=f'{{"model": "{running.model}", "prompt": "\xc3\x28"}}'.encode("latin-1"),
            ),
            await http.post("/v1/completions", content=b"\xef\xbb\xbf\xff{}"),
            await admin.post("/admin/tenants", content=b'{"name": "\xed\xa0\x80"}'),
        ]
    for r in answers:
        _error(r, 400)


# -- sampling parameters ------------------------------------------------------------------


def _raw(running: Running, path: str, **fields: str) -> bytes:
    """A request body for `path` with fields written as raw JSON text (NaN, 1e999)."""
    extra = "".join(f', "{k}": {v}' for k, v in fields.items())
    if path == "/v1/chat/completions":
        prompt = '"messages": [{"role": "user", "content": "Hi"}]'
    else:
        prompt = '"prompt": "Hi"'
    return f'{{"model": "{running.model}", {prompt}{extra}}}'.encode()


@pytest.mark.parametrize(
    "fields",
    [
        {"n": "1000000"},
        {"n": "2"},
        {"max_tokens": "1000000000000"},
        {"max_tokens": "-1"},
        {"max_tokens": "0"},
        {"temperature": "NaN"},
        {"temperature": "-1"},
        {"temperature": '"inf"'},
        {"temperature": "Infinity"},
        {"temperature": "1e999"},
        {"top_p": "2"},
        {"top_p": "NaN"},
        {"top_p": "0"},
        {"top_p": "-Infinity"},
        {"top_k": "-1"},
        {"seed": "18446744073709551616"},
        {"seed": "-9223372036854775809"},
        {"seed": "1" + "0" * 400},
        {"stop": json.dumps(["a"] * 5)},
        {"stop": '[""]'},
    ],
    ids=lambda f: ",".join(f"{k}={v[:12]}" for k, v in f.items()),
)
async def test_absurd_sampling_parameters_are_a_400_without_engine_work(
    running: Running, fields: dict[str, str]
) -> None:
    restarts = running.engine.num_restarts
    async with running.http() as http:
        for path in ("/v1/completions", "/v1/chat/completions"):
            _error(await http.post(path, content=_raw(running, path, **fields)), 400)
        chat = _raw(running, "/v1/chat/completions", max_completion_tokens="1e12")
        _error(await http.post("/v1/chat/completions", content=chat), 400)
    assert running.engine.num_restarts == restarts


async def test_a_vanishing_temperature_and_a_huge_top_k_still_answer(running: Running) -> None:
    # temperature 5e-324 once overflowed the logits and took the engine process down, and
    # every request in flight with it (found by the fuzzing suite).
    restarts = running.engine.num_restarts
    async with running.http() as http:
        for fields in (
            {"temperature": "5e-324"},
            {"temperature": "1e-40", "top_p": "5e-324"},
            {"top_k": str(10**30), "temperature": "2"},
            {"seed": str(2**64 - 1), "temperature": "1"},
            {"seed": str(-(2**63)), "temperature": "1"},
        ):
            fields["max_tokens"] = "4"
            r = await http.post(
                "/v1/completions", content=_raw(running, "/v1/completions", **fields)
            )
            assert r.status_code == 200, (fields, r.text)
    await _engine_unharmed(running, restarts)


async def test_a_refused_request_gives_back_its_concurrency_slot(running: Running) -> None:
    # Requests refused after admission must release what admission reserved: with one
    # concurrent request allowed, a run of refusals never locks the tenant out.
    tenant = await add_tenant(running.tenancy, "one-at-a-time")
    async with running.admin() as admin:
        r = await admin.patch(f"/admin/tenants/{tenant.id}", json={"limits": {"max_concurrent": 1}})
        assert r.status_code == 200, r.text
    async with running.http(key=tenant.key) as http:
        for fields in ({"seed": str(2**70)}, {"top_p": "NaN"}, {"temperature": "NaN"}):
            r = await http.post(
                "/v1/completions", content=_raw(running, "/v1/completions", **fields)
            )
            _error(r, 400)
        ok = await http.post(
            "/v1/completions", json={"model": running.model, "prompt": "Hi", "max_tokens": 1}
        )
    assert ok.status_code == 200, ok.text


# -- streams ------------------------------------------------------------------------------


def _rss_bytes() -> int:
    """This process's resident set (the gateway runs in the test process)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def test_sse_clients_that_never_read_or_leave_early_free_everything_and_are_metered(
    running: Running,
) -> None:
    # A stream's client gone mid-stream used to leak its pool seat and concurrency slot,
    # and its usage event: the clean-up ran in the cancelled response task and was itself
    # cancelled at its first await. Twelve leaks would have stalled this pool for every
    # tenant.
    tenant = await add_tenant(running.tenancy, "never-reads")
    restarts = running.engine.num_restarts
    body = {
        "model": running.model,
        "prompt": "Count forever:",
        "max_tokens": 900,
        "temperature": 0,
        "stream": True,
    }
    request = _http_request("POST", "/v1/completions", tenant.key, json.dumps(body).encode())
    before = _rss_bytes()
    clients = [await _connect(running) for _ in range(12)]
    for i, (reader, writer) in enumerate(clients):
        writer.write(request)
        await writer.drain()
        if i % 2:  # half read their first event, the others never read at all
            async with asyncio.timeout(10):
                await reader.readuntil(b"data: ")
    await asyncio.sleep(2)
    grown = _rss_bytes() - before
    # The engine's outputs queue up for a client that does not read: bounded by max_tokens.
    assert grown < 64 << 20, f"the gateway grew {grown >> 20} MiB for 12 unread streams"
    assert running.engine.num_unfinished_requests > 0  # still running: not done already
    for _, writer in clients:
        writer.close()
    await _engine_unharmed(running, restarts)
    async with asyncio.timeout(10):
        while running.service.queue.in_flight:  # every seat back
            await asyncio.sleep(0.05)
        # ... and each stream metered once, as cancelled.
        async with running.http(key=tenant.key) as http:
            while (await http.get("/v1/usage")).json()["total"]["cancelled"] < 12:
                await asyncio.sleep(0.1)
            assert (await http.get("/v1/usage")).json()["total"]["requests"] == 12


# -- raw HTTP: trickles, lies and smuggling -----------------------------------------------


async def _connect(running: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = running.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


def _http_request(
    method: str, path: str, key: str, body: bytes = b"", headers: str | None = None
) -> bytes:
    if headers is None:
        headers = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n{headers}\r\n"
    return head.encode() + body


async def _responses(reader: asyncio.StreamReader, timeout_s: float = 10) -> list[int]:
    """The statuses of every response on the connection until the server closes it (or
    stays silent for `timeout_s`)."""
    data = b""
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        pass
    return [int(line.split()[1]) for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


async def test_a_body_that_trickles_in_is_cut_off_with_a_408(running: Running) -> None:
    body = json.dumps({"model": running.model, "prompt": "Hi", "max_tokens": 1}).encode()
    reader, writer = await _connect(running)
    headers = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(_http_request("POST", "/v1/completions", running.acme.key, b"", headers))
    started = asyncio.get_running_loop().time()
    try:
        for byte in body:  # a byte every 0.2 s: the whole body would take ~10 s
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)
            if reader.at_eof() or len(reader._buffer):  # type: ignore[attr-defined]
                break
    except ConnectionError:
        pass
    statuses = await _responses(reader, timeout_s=5)
    elapsed = asyncio.get_running_loop().time() - started
    writer.close()
    assert statuses == [408], statuses
    assert elapsed < BODY_TIMEOUT_S + 3


async def test_a_body_shorter_than_its_content_length_times_out_with_a_408(
    running: Running,
) -> None:
    body = json.dumps({"model": running.model, "prompt": "Hi", "max_tokens": 1}).encode()
    headers = f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n"
    for path, key in (("/v1/completions", running.acme.key), ("/admin/tenants", ADMIN_TOKEN)):
        reader, writer = await _connect(running)
        writer.write(_http_request("POST", path, key, body, headers))
        statuses = await _responses(reader, timeout_s=BODY_TIMEOUT_S + 5)
        writer.close()
        assert statuses == [408], (path, statuses)


async def test_a_client_hanging_up_mid_body_is_not_a_server_error(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"model": running.model, "prompt": "Hi", "max_tokens": 1}).encode()
    headers = f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n"
    restarts = running.engine.num_restarts
    for path, key in (("/v1/completions", running.acme.key), ("/admin/tenants", ADMIN_TOKEN)):
        _, writer = await _connect(running)
        writer.write(_http_request("POST", path, key, body, headers))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
    await asyncio.sleep(0.5)
    assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]
    await _engine_unharmed(running, restarts)


SMUGGLED = b"GET /health?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        # Two lengths that disagree.
        "Content-Length: 2\r\nContent-Length: {n}\r\n",
        "Content-Length: {n}\r\nContent-Length: 2\r\n",
        "Content-Length: 2, {n}\r\n",
        # Both framings: chunked must win or the request must be refused.
        "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
        # Obfuscated Transfer-Encoding.
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Transfer-Encoding: xchunked\r\nContent-Length: 2\r\n",
        "Transfer-Encoding : chunked\r\nContent-Length: 2\r\n",
        "Content-Length: +{n}\r\n",
        "Content-Length: -1\r\n",
    ],
)
async def test_smuggling_attempts_are_refused_or_read_as_one_request(
    running: Running, headers: str
) -> None:
    # The body is a chunked message carrying "{}" whose end is followed by a second
    # request: a parser that believes the wrong length sees that request as the next one.
    chunked = b"2\r\n{}\r\n0\r\n\r\n"
    body = chunked + SMUGGLED
    request = _http_request(
        "POST",
        "/admin/tenants",
        ADMIN_TOKEN,
        body,
        "Connection: close\r\n" + headers.format(n=len(chunked)),
    )
    reader, writer = await _connect(running)
    writer.write(request)
    await writer.drain()
    statuses = await _responses(reader, timeout_s=BODY_TIMEOUT_S + 5)
    writer.close()
    # One answer (the parser's 400, or the app's for the one request it saw), never a
    # second one for the smuggled request.
    assert len(statuses) <= 1, statuses
    assert all(400 <= s < 500 for s in statuses), statuses


async def test_a_chunk_size_beyond_the_limit_is_refused_without_reading_it(
    running: Running,
) -> None:
    headers = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    for size in (f"{MAX_BODY_BYTES + 1:x}", "ffffffffffffffff", "1" * 40):
        reader, writer = await _connect(running)
        writer.write(_http_request("POST", "/v1/completions", running.acme.key, b"", headers))
        writer.write(f"{size}\r\n".encode() + b"x" * (MAX_BODY_BYTES + 2))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        statuses = await _responses(reader, timeout_s=BODY_TIMEOUT_S + 5)
        writer.close()
        assert len(statuses) == 1 and statuses[0] in (400, 413), (size, statuses)
