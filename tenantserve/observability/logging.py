"""Structured logs: `JsonFormatter` writes one JSON object per line, each with the
`request_id` and `tenant_id` of the request being served (null outside a request);
`configure_logging` installs it (or the text format) on tenantserve's loggers.

    {"ts": "2026-01-02T03:04:05.678Z", "level": "INFO", "logger": "tenantserve.x",
     "request_id": "req_…", "tenant_id": "ten_…", "message": "…"}

A request log line (`tenantserve.requests`, already a JSON object) is embedded as
`"record"` rather than quoted. Log calls pass ids and counts, never prompt or
completion text: nothing here adds content, and the request records are content-free.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from tenantserve.observability.context import current_request

REQUEST_LOGGER = "tenantserve.requests"
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s [%(request_id)s %(tenant_id)s] %(message)s"


class RequestContextFilter(logging.Filter):
    """Stamps `request_id` and `tenant_id` on each record where it is emitted (the
    formatter may run later, elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            context = current_request()
            record.request_id = context.request_id if context is not None else None
            record.tenant_id = context.tenant_id if context is not None else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, request id, tenant id, message
    (and the exception's traceback, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            RequestContextFilter().filter(record)
        seconds = time.gmtime(record.created)
        ts = f"{time.strftime('%Y-%m-%dT%H:%M:%S', seconds)}.{int(record.msecs):03d}Z"
        head = {
            "ts": ts,
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", None),
            "tenant_id": getattr(record, "tenant_id", None),
        }
        message = record.getMessage()
        if record.name == REQUEST_LOGGER and message.startswith("{"):
            # Already JSON (`RequestRecord.to_json`): embedded, not quoted.
            return json.dumps(head, separators=(",", ":"))[:-1] + f',"record":{message}}}'
        line: dict[str, object] = {**head, "message": message}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def configure_logging(log_format: str = "json", stream: TextIO | None = None) -> logging.Handler:
    """tenantserve's loggers (the request log included) on `stream` (stderr) at INFO, in
    `log_format` ("json" or "text"); returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger("tenantserve")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    return handler
