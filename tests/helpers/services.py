"""Real backing services for integration tests (PostgreSQL, Redis, NATS).

On a developer's machine without the service, the test skips and says why. With CI=true
an unreachable service is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """What a test does without something it needs: under CI=true it fails, elsewhere it
    skips and prints why."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; CI=true requires it")
    print(f"\nSKIP: {message}")
    pytest.skip(message)


def require_service(name: str, host: str, port: int) -> None:
    """Skip (fail under CI=true) unless something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as e:
        unavailable(f"{name} is not reachable at {host}:{port} ({e})")


REDIS_URL = os.environ.get("TENANTSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "TENANTSERVE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
NATS_URL = os.environ.get("TENANTSERVE_TEST_NATS_URL", "nats://127.0.0.1:4222")


def free_port() -> int:
    """A local TCP port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
