"""`tenantserve metering ship|aggregate` start-up: a dependency that is not ready yet is
retried with a back-off (logged), a configuration error is not, and one that never comes
up ends the command with exit 1 and a message that says what to check."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tenantserve.cli.main import app
from tenantserve.cli.metering import start_with_retries
from tenantserve.errors import InvalidRequestError
from tests.helpers.services import free_port


async def test_a_start_that_fails_twice_is_retried_until_it_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float] = []

    async def start() -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("terminating connection due to administrator command")

    with caplog.at_level(logging.WARNING, logger="tenantserve.metering"):
        await start_with_retries("the aggregator", start, timeout_s=10)
    assert len(calls) == 3
    assert calls[2] - calls[1] > calls[1] - calls[0] >= 0.2  # the delay grows
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "the aggregator is not ready (ConnectionError" in warnings[0]


async def test_a_configuration_error_is_not_retried() -> None:
    calls = 0

    async def start() -> None:
        nonlocal calls
        calls += 1
        raise InvalidRequestError("no such stream config")

    with pytest.raises(InvalidRequestError):
        await start_with_retries("the shipper", start, timeout_s=10)
    assert calls == 1


async def test_a_dependency_that_never_comes_up_fails_after_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def start() -> None:
        raise OSError("connection refused")

    started = time.monotonic()
    with pytest.raises(typer.Exit) as exited:
        await start_with_retries("the shipper", start, timeout_s=0.6)
    assert exited.value.exit_code == 1
    assert 0.2 < time.monotonic() - started < 3
    err = capsys.readouterr().err
    assert "the shipper could not start in 0.6 s (OSError: connection refused)" in err
    assert "TENANTSERVE_NATS_URL" in err


def test_the_shipper_command_exits_1_when_nats_never_answers(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    args = ["metering", "ship", "--data-dir", str(tmp_path), "--nats-url", url]
    result = CliRunner().invoke(app, [*args, "--start-timeout-s", "1"])
    assert result.exit_code == 1
    assert "the shipper could not start in 1 s (TimeoutError)" in result.stderr
