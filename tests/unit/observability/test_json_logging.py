"""JSON log lines: every line inside a request carries its request id and tenant id; the
request log's record is embedded (never its opted-in content)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from tenantserve.gateway.request_log import RequestLog, RequestRecord
from tenantserve.observability.context import (
    RequestContext,
    bind_request,
    bind_tenant,
    unbind_request,
)
from tenantserve.observability.logging import configure_logging

PROMPT = "my secret prompt 4242"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger("tenantserve")
    saved = (list(root.handlers), root.level, root.propagate)
    root.handlers.clear()
    handler = configure_logging("json", stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.handlers[:], root.level, root.propagate = saved


def _parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_every_line_in_a_request_carries_its_request_and_tenant_id(
    lines: io.StringIO,
) -> None:
    log = logging.getLogger("tenantserve.gateway.test")
    log.info("before")

    async def request(rid: str, tenant: str) -> None:
        token = bind_request(RequestContext(rid))
        try:
            log.info("authenticating")
            bind_tenant(tenant)
            await asyncio.sleep(0)
            log.warning("working on %s", "it")
            await asyncio.to_thread(log.info, "in a thread")
        finally:
            unbind_request(token)

    await asyncio.gather(request("req_1", "ten_a"), request("req_2", "ten_b"))
    log.info("after")

    parsed = _parsed(lines)
    assert parsed[0]["request_id"] is None and parsed[-1]["request_id"] is None
    inside = parsed[1:-1]
    assert len(inside) == 6
    for line in inside:
        assert {"ts", "level", "logger", "message"} <= line.keys()
        if line["message"] != "authenticating":
            tenant = {"req_1": "ten_a", "req_2": "ten_b"}[str(line["request_id"])]
            assert line["tenant_id"] == tenant
    assert {line["message"] for line in inside} >= {"working on it", "in a thread"}


def test_a_request_log_record_is_embedded_without_its_content(lines: io.StringIO) -> None:
    record = RequestRecord(
        request_id="req_9",
        tenant_id="ten_c",
        tier="standard",
        pool="shared",
        model="m",
        status="completed",
        prompt_tokens=3,
        completion_tokens=2,
        cached_tokens=0,
        admission_ms=1.0,
        queue_ms=0.0,
        engine_queue_ms=None,
        ttft_ms=5.0,
        total_ms=9.0,
        prompt_text=PROMPT,
        completion_text="a secret answer",
    )
    token = bind_request(RequestContext("req_9", "ten_c"))
    try:
        RequestLog().write(record)
    finally:
        unbind_request(token)
    text = lines.getvalue()
    assert PROMPT not in text and "secret answer" not in text
    (line,) = _parsed(lines)
    assert line["request_id"] == "req_9" and line["tenant_id"] == "ten_c"
    assert line["record"]["prompt_tokens"] == 3  # type: ignore[index]


def test_exceptions_are_one_json_line(lines: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("tenantserve.x").exception("failed")
    (line,) = _parsed(lines)
    assert "ValueError: boom" in str(line["exception"])
