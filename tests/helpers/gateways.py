"""Real `tenantserve up` processes for tests of several gateways: each on a free port, in
a process group of its own (its engine child goes with it), stopped with SIGTERM and
checked to leave nothing behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers.server import ADMIN_TOKEN
from tests.helpers.services import REDIS_URL, free_port

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def tenantserve_command() -> str:
    """The `tenantserve` script of the interpreter running the tests."""
    script = Path(sys.executable).parent / "tenantserve"
    if script.exists():
        return str(script)
    found = shutil.which("tenantserve")
    assert found, "the tenantserve command is not installed"
    return found


def start_gateway(
    data_dir: Path, model_dir: Path, index: int, settings: Mapping[str, str] | None = None
) -> Gateway:
    """`tenantserve up` on a free port with the tiny model, the test admin token, the
    test Redis and `settings` (more TENANTSERVE_* variables)."""
    port = free_port()
    # Only the settings given here: an ambient TENANTSERVE_DATABASE_URL (say) would split
    # the gateways from the database the tenant was written to.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TENANTSERVE_")},
        "TENANTSERVE_MODEL_DIR": str(model_dir),
        "TENANTSERVE_REDIS_URL": REDIS_URL,
        "TENANTSERVE_ADMIN_TOKEN": ADMIN_TOKEN,
        "TENANTSERVE_KV_CACHE_BYTES": str(16 << 20),
        **(settings or {}),
    }
    log = data_dir / f"gateway-{index}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [tenantserve_command(), "up", "--port", str(port), "--data-dir", str(data_dir)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the engine child goes with it
        )
    return Gateway(url=f"http://127.0.0.1:{port}", process=process, log=log)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_gateways(gateways: list[Gateway]) -> None:
    """SIGTERM each gateway (it stops its own engine), SIGKILL whatever is left of its
    process group, and check that nothing of the groups survives."""
    for g in gateways:
        if g.process.poll() is None:
            g.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for g in gateways:
        with suppress(subprocess.TimeoutExpired):
            g.process.wait(timeout=max(0.1, deadline - time.monotonic()))
    # What the gateway started (its engine, multiprocessing's resource tracker) may take
    # a moment more to exit after it.
    while any(group_alive(g.process.pid) for g in gateways) and time.monotonic() < deadline:
        time.sleep(0.05)
    for g in gateways:
        if group_alive(g.process.pid):
            print(f"gateway {g.url}: killing what SIGTERM left of process group {g.process.pid}")
            os.killpg(g.process.pid, signal.SIGKILL)
        g.process.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(group_alive(g.process.pid) for g in gateways) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [g.process.pid for g in gateways if group_alive(g.process.pid)]
    assert not orphans, f"processes of the gateway groups {orphans} are still running"


@contextmanager
def gateways_running(
    data_dir: Path,
    model_dir: Path,
    n: int,
    settings: Mapping[str, str] | None = None,
    own_data_dirs: bool = False,
) -> Iterator[list[Gateway]]:
    """`n` gateway processes sharing whatever `settings` name (a database, Redis, a
    stream) and `data_dir`, or each a data dir of its own under it (`own_data_dirs`: its
    own outbox, artifact cache and request logs, as on separate machines)."""
    gateways: list[Gateway] = []
    try:
        for i in range(n):
            own = data_dir / f"gateway-{i}" if own_data_dirs else data_dir
            own.mkdir(parents=True, exist_ok=True)
            gateways.append(start_gateway(own, model_dir, i, settings))
        yield gateways
    finally:
        stop_gateways(gateways)


async def wait_healthy(gateways: list[Gateway]) -> None:
    async with httpx.AsyncClient(timeout=2.0) as client:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = list(gateways)
        while pending:
            for g in list(pending):
                if g.process.poll() is not None:
                    pytest.fail(
                        f"gateway {g.url} exited with {g.process.returncode}:\n{g.log_tail()}"
                    )
                try:
                    if (await client.get(f"{g.url}/health")).status_code == 200:
                        pending.remove(g)
                except httpx.TransportError:
                    pass
            if pending and time.monotonic() > deadline:
                tails = "\n\n".join(f"{g.url}:\n{g.log_tail()}" for g in pending)
                pytest.fail(f"gateways not healthy after {START_TIMEOUT_S}s:\n{tails}")
            await asyncio.sleep(0.1)
