"""`VllmLauncher`: one vLLM OpenAI-compatible server process that tenantserve starts and
stops itself (a `kind = "vllm"` pool with `launch = {...}`).

The server runs as `python -m vllm.entrypoints.openai.api_server` from vLLM's own
interpreter (its own virtual environment), on loopback, with runtime LoRA updating on
(`VLLM_ALLOW_RUNTIME_LORA_UPDATING`), `--enable-lora`, `--scheduling-policy priority` and
`--enable-prompt-tokens-details` (cached prompt tokens in usage, metered as cached);
its stdout and stderr go to a log file. `start()` returns once `GET /health` answers 200;
a process that exits first, or a server not healthy within the deadline, raises
`ConfigError` with the log's last lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path

import httpx

from tenantserve.errors import ConfigError
from tenantserve.pool_config import VllmLaunchConfig

logger = logging.getLogger(__name__)

HEALTH_POLL_S = 0.5
STOP_GRACE_S = 20.0
LOG_TAIL_BYTES = 4000


def free_port() -> int:
    """A free loopback TCP port (free now: the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmLauncher:
    """Starts, health-checks and stops one vLLM server; `base_url` is known up front."""

    def __init__(
        self,
        cfg: VllmLaunchConfig,
        served_model_names: tuple[str, ...],
        log_path: Path,
        max_loras: int,
        max_lora_rank: int,
    ) -> None:
        self.cfg = cfg
        self.port = cfg.port or free_port()
        self.served_model_names = served_model_names
        self.log_path = log_path
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self._process: asyncio.subprocess.Process | None = None
        self.start_s: float | None = None  # seconds the last start took

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's command line: ours first, the configured `args` last (they win)."""
        return [
            str(self.cfg.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.cfg.model),
            "--served-model-name",
            *self.served_model_names,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--enable-lora",
            "--max-loras",
            str(self.max_loras),
            "--max-lora-rank",
            str(self.max_lora_rank),
            "--scheduling-policy",
            "priority",
            # usage.prompt_tokens_details.cached_tokens: metered, billed at the cached rate
            "--enable-prompt-tokens-details",
            *self.cfg.args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        return env

    async def start(self) -> None:
        """Start the server and wait until it is healthy (or raise with its log's tail)."""
        if not Path(self.cfg.python).exists():
            raise ConfigError(f"vLLM's interpreter {self.cfg.python} does not exist")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,  # its workers go with it on stop
            )
        logger.info("vLLM starting (pid %d), log: %s", self._process.pid, self.log_path)
        try:
            await self._wait_healthy(started + self.cfg.start_timeout_s)
        except BaseException:
            await self.stop()
            raise
        self.start_s = time.monotonic() - started
        logger.info("vLLM healthy at %s after %.1f s", self.base_url, self.start_s)

    async def _wait_healthy(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        health = f"http://127.0.0.1:{self.port}/health"
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                if process.returncode is not None:
                    raise ConfigError(
                        f"vLLM exited with {process.returncode} during start-up; "
                        f"its log ({self.log_path}) ends:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(health)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"vLLM was not healthy within {self.cfg.start_timeout_s:.0f} s; "
                        f"its log ({self.log_path}) ends:\n{self.log_tail()}"
                    )
                await asyncio.sleep(HEALTH_POLL_S)

    async def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after a grace period."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except TimeoutError:
            logger.warning("vLLM did not stop within %.0f s: killed", STOP_GRACE_S)
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()

    def log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
