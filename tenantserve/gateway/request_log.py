"""The request log: one JSON line per request that reached a backend (and one per request
refused at admission, `status` "rejected" with its HTTP status and error code), with who
asked, where it ran, what it used, where its time went, and its usage event.

    {"request_id", "tenant_id", "tier", "pool", "model", "status",
     "prompt_tokens", "completion_tokens", "cached_tokens",
     "admission_ms"      auth'd request -> admitted (policy, quotas, limiter, fair queue)
     "queue_ms"          of which waiting in the pool's fair queue
     "engine_queue_ms"   in the engine before its first step (built-in engine)
     "ttft_ms"           admitted -> first token (engine) or first byte (upstream)
     "total_ms", "preemptions",
     "usage"             the request's `UsageEvent` (what reconciliation re-emits),
     "adapter", "region", "started_at" (Unix s), "http_status", "error_code",
     "adapter_wait_ms"   waiting for its adapter to load into a slot (built-in engine)}

Opted-in prompt / completion text never goes to these lines, only to the request
records store (a third sink, `RequestLog(sink=...)`: `observability/record_writer.py`).

Two sinks: the `tenantserve.requests` logger (`tenantserve up` prints it on stderr;
operators ship it like any structured log) and, when configured, `RequestLogFiles`:
hourly files `requests-YYYYMMDDHH.jsonl` (UTC) in the data dir's `logs/`, appended by
every gateway process, which `tenantserve usage reconcile` reads back and compares with
the metered usage. The metering store is the billing record; this is the independent
one it is checked against.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tenantserve.metering.events import UsageEvent

logger = logging.getLogger("tenantserve.requests")


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    tenant_id: str
    tier: str
    pool: str
    model: str
    status: str  # a `UsageStatus` value, or "rejected" (refused at admission)
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    admission_ms: float
    queue_ms: float
    engine_queue_ms: float | None
    ttft_ms: float | None
    total_ms: float
    preemptions: int = 0
    usage: UsageEvent | None = field(default=None, repr=False)
    adapter: str = ""
    region: str = ""
    started_at: float = 0.0  # Unix seconds
    http_status: int | None = None  # rejected requests: the status they were refused with
    error_code: str | None = None
    adapter_wait_ms: float | None = None
    # Only for tenants that opted in (`Tenant.log_content`); never in the log lines.
    prompt_text: str | None = field(default=None, repr=False)
    completion_text: str | None = field(default=None, repr=False)

    @property
    def failed(self) -> bool:
        """Failed on our side (engine / upstream error, a 5xx refusal): what availability
        counts against us."""
        return self.status == "error" or (self.http_status or 0) >= 500

    def to_json(self) -> str:
        fields: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name in _CONTENT_FIELDS:
                continue
            value = getattr(self, name)
            if isinstance(value, float):
                value = round(value, 3)
            elif isinstance(value, UsageEvent):
                value = value.to_dict()
            fields[name] = value
        return json.dumps(fields, separators=(",", ":"))


_CONTENT_FIELDS = frozenset({"prompt_text", "completion_text"})
REJECTED = "rejected"


def rejected_record(
    request_id: str,
    tenant_id: str,
    tier: str,
    region: str,
    model: str,
    http_status: int,
    error_code: str | None,
    started_at: float,
    elapsed_ms: float,
) -> RequestRecord:
    """The record of a request refused at admission (it never reached a backend)."""
    return RequestRecord(
        request_id=request_id,
        tenant_id=tenant_id,
        tier=tier,
        pool="",
        model=model,
        status=REJECTED,
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        admission_ms=elapsed_ms,
        queue_ms=0.0,
        engine_queue_ms=None,
        ttft_ms=None,
        total_ms=elapsed_ms,
        region=region,
        started_at=started_at,
        http_status=http_status,
        error_code=error_code,
    )


class RequestLogFiles:
    """Hourly JSON-lines files of the request log, shared by every gateway process
    (each line is one `O_APPEND` write, so lines from several processes never mix)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._hour: str | None = None
        self._fd: int | None = None

    @staticmethod
    def file_name(hour: datetime) -> str:
        return f"requests-{hour.astimezone(UTC):%Y%m%d%H}.jsonl"

    def write(self, line: str, now: datetime | None = None) -> None:
        hour = self.file_name(now or datetime.now(UTC))
        data = (line + "\n").encode()
        with self._lock:
            if hour != self._hour or self._fd is None:
                if self._fd is not None:
                    os.close(self._fd)
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
                self._fd = os.open(self.directory / hour, flags, 0o640)
                self._hour = hour
            os.write(self._fd, data)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def usage_events(self, start: datetime, end: datetime) -> Iterator[UsageEvent]:
        """The usage events of the records in the files covering [start, end) that ended
        in that window (a request is logged when it ends, a little after its end time,
        so the hour after `end` is read too)."""
        hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        last = end + timedelta(hours=1)
        t0, t1 = start.timestamp(), end.timestamp()
        while hour < last:
            path = self.directory / self.file_name(hour)
            if path.exists():
                yield from _events_in(path, t0, t1)
            hour += timedelta(hours=1)


def _events_in(path: Path, t0: float, t1: float) -> Iterator[UsageEvent]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            try:
                usage = json.loads(line).get("usage")
            except ValueError:  # a torn last line after a crash
                logger.warning("%s:%d is not JSON; skipped", path, number)
                continue
            if not usage:
                continue
            event = UsageEvent.from_dict(usage)
            if t0 <= event.ended_at < t1:
                yield event


class RequestLog:
    """Where request records go: the logger, the files when configured, and `sink` (the
    request records store's background writer; must not block)."""

    def __init__(
        self,
        files: RequestLogFiles | None = None,
        sink: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.files = files
        self.sink = sink

    def write(self, record: RequestRecord) -> None:
        if self.sink is not None:
            self.sink(record)
        to_logger = logger.isEnabledFor(logging.INFO)
        if not to_logger and self.files is None:
            return
        line = record.to_json()
        if to_logger:
            logger.info(line)
        if self.files is not None:
            try:
                self.files.write(line)
            except OSError:
                logger.exception("request log file write failed for %s", record.request_id)

    def close(self) -> None:
        if self.files is not None:
            self.files.close()
