"""`tenantserve up` serves the OpenAI-compatible API (what it prints and starts once ready:
`ready.py`); `tenantserve chat` talks to the model; `tenantserve tenant ...` and
`tenantserve key ...` (in `tenants.py`) administer tenants.

Flags override `TENANTSERVE_*` environment variables, which override the defaults
(see `tenantserve.config`).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TextIO

import typer

from tenantserve.cli.admin_client import CommandError, open_direct_tenancy
from tenantserve.cli.audit import audit_app
from tenantserve.cli.debug import debug_app
from tenantserve.cli.evals import eval_app
from tenantserve.cli.invoices import invoice_app
from tenantserve.cli.metering import metering_app
from tenantserve.cli.models import model_app
from tenantserve.cli.prices import credit_app, price_app
from tenantserve.cli.ready import admin_token_line, print_banner, start_demo_traffic
from tenantserve.cli.rollout import rollout_app
from tenantserve.cli.tenants import key_app, tenant_app
from tenantserve.cli.usage import usage_app
from tenantserve.config import ENGINE_BACKENDS, Settings
from tenantserve.engine.client import AsyncEngineClient
from tenantserve.engine.request import EngineRequest, SamplingParams
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import ConfigError, InvalidRequestError, TenantServeError
from tenantserve.observability.logging import configure_logging
from tenantserve.pool_config import load_pools

if TYPE_CHECKING:
    from tenantserve.bootstrap import Service
    from tenantserve.cli.demo import DemoTenant

app = typer.Typer(
    name="tenantserve",
    help="Multi-tenant LLM serving with an OpenAI-compatible API.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(tenant_app)
app.add_typer(key_app)
app.add_typer(model_app)
app.add_typer(rollout_app)
app.add_typer(metering_app)
app.add_typer(usage_app)
app.add_typer(invoice_app)
app.add_typer(price_app)
app.add_typer(credit_app)
app.add_typer(debug_app)
app.add_typer(audit_app)
app.add_typer(eval_app)

DataDirOption = Annotated[
    Path | None,
    typer.Option(help="Where models and state live (default .tenantserve).", show_default=False),
]


@app.command()
def up(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default 127.0.0.1).", show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default 8000).", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    device: Annotated[
        str | None, typer.Option(help="Torch device (default cpu).", show_default=False)
    ] = None,
    quantization: Annotated[
        str | None,
        typer.Option(help="fp32, bf16 or int8 weights (default fp32).", show_default=False),
    ] = None,
    pools: Annotated[
        Path | None,
        typer.Option(
            help="TOML file of external OpenAI-compatible pools (one `pool` table per "
            "server: name, base_url, models, region, reserved_for; see the README).",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="Where the built-in engine runs: process (a child process, default) or "
            "ray (Ray Serve deployments: replicas, autoscaling, adapter multiplexing).",
            show_default=False,
        ),
    ] = None,
    no_engine: Annotated[
        bool, typer.Option("--no-engine", help="No built-in engine: serve only --pools.")
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="--engine ray: the Ray cluster (auto, ray://host:port); default a local Ray.",
            show_default=False,
        ),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(
            help="--engine ray: engine replicas of the shared pool (fixed; default 1).",
            show_default=False,
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Create demo tenants (one per tier, region us) if missing and print their "
            "API keys (the same ones every run; kept in the data dir's demo_keys.json).",
        ),
    ] = False,
) -> None:
    """Serve the model over HTTP (OpenAI-compatible), converting the default model on first run."""
    import uvicorn

    from tenantserve.bootstrap import build_service, ensure_admin_token

    try:
        settings = Settings.from_env(
            host=host, port=port, data_dir=data_dir, device=device, quantization=quantization
        )
        if pools is not None:
            settings = replace(settings, pools=load_pools(pools))
        if no_engine:
            settings = replace(settings, builtin_engine=False)
        settings = _engine_backend(settings, engine, ray_address, replicas)
        admin_token, created = ensure_admin_token(settings)
        admin_line = admin_token_line(settings, admin_token, created)
        demos = asyncio.run(_demo_tenants(settings)) if demo else []

        def ready(service: Service) -> None:
            print_banner(service, admin_line, demos)
            if demos:
                start_demo_traffic(service, demos, admin_token)

        service = build_service(settings, on_ready=ready)
    except TenantServeError as e:
        _fail(e)
    except CommandError as e:
        _err(f"error: {e}")
        raise typer.Exit(code=e.exit_code) from None
    if settings.builtin_engine:
        where = "Ray Serve" if settings.engine_backend == "ray" else settings.device
        _err(f"starting the engine for {service.model.name} on {where}")
    for pool in settings.pools:
        _err(f"pool {pool.name}: {', '.join(pool.models)} at {pool.base_url} ({pool.region})")
    # No uvicorn access log: a formatted line per request is a measurable share of the
    # gateway's CPU per request; per-request logging, where wanted, belongs in the app.
    # Our own lines: JSON (or text: TENANTSERVE_LOG_FORMAT) with request and tenant ids.
    configure_logging(settings.observability.log_format)
    uvicorn.run(
        service.app, host=settings.host, port=settings.port, log_level="info", access_log=False
    )


def _engine_backend(
    settings: Settings, engine: str | None, ray_address: str | None, replicas: int | None
) -> Settings:
    """`--engine process|ray`, `--ray-address`, `--replicas` over the settings."""
    if engine is not None:
        if engine not in ENGINE_BACKENDS:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINE_BACKENDS)}")
        settings = replace(settings, engine_backend=engine)
    ray = settings.ray
    if ray_address is not None:
        ray = replace(ray, address=ray_address)
    if replicas is not None:
        ray = replace(ray, min_replicas=replicas, max_replicas=replicas)
    return replace(settings, ray=ray)


async def _demo_tenants(settings: Settings) -> list[DemoTenant]:
    from tenantserve.cli.demo import ensure_demo_tenants

    async with open_direct_tenancy(settings) as service:
        return await ensure_demo_tenants(service, settings.data_dir)


@app.command()
def chat(
    data_dir: DataDirOption = None,
    max_tokens: Annotated[int, typer.Option(help="Longest reply, in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 is greedy.")] = 0.7,
) -> None:
    """Chat with the model in the terminal; reads stdin (piped input works), /exit quits."""
    from tenantserve.pool_setup import resolve_model_dir

    try:
        settings = Settings.from_env(data_dir=data_dir)
        model_dir = resolve_model_dir(settings)
        tokenizer = Tokenizer(model_dir)
        sampling = SamplingParams(max_tokens=max_tokens, temperature=temperature)
    except TenantServeError as e:
        _fail(e)
    _err(f"loading {model_dir.name} ...")
    try:
        asyncio.run(
            _chat(AsyncEngineClient(settings.engine_config(model_dir)), tokenizer, sampling)
        )
    except KeyboardInterrupt:
        pass
    except TenantServeError as e:
        _fail(e)


async def _chat(engine: AsyncEngineClient, tokenizer: Tokenizer, sampling: SamplingParams) -> None:
    interactive = sys.stdin.isatty()
    lines = _StdinLines(sys.stdin)
    history: list[dict[str, str]] = []
    async with engine:
        _err("ready. /exit quits, /reset forgets the conversation.")
        while True:
            if interactive:
                print("you> ", end="", flush=True)
            line = await lines.next()
            if line is None:
                break
            text = line.strip()
            if not text:
                continue
            if not interactive:
                print(f"you> {text}")
            if text in ("/exit", "/quit"):
                break
            if text == "/reset":
                history.clear()
                print("(conversation forgotten)")
                continue
            history.append({"role": "user", "content": text})
            reply = await _reply(engine, tokenizer, history, sampling, sys.stdout)
            if reply is None:
                history.pop()
            else:
                history.append({"role": "assistant", "content": reply})


async def _reply(
    engine: AsyncEngineClient,
    tokenizer: Tokenizer,
    history: list[dict[str, str]],
    sampling: SamplingParams,
    out: TextIO,
) -> str | None:
    """Stream the model's answer to `out`; None (and a message) when the engine refused."""
    out.write("assistant> ")
    out.flush()
    parts: list[str] = []
    try:
        request = EngineRequest(
            request_id=f"chat-{uuid.uuid4().hex}",
            prompt_token_ids=tuple(tokenizer.encode_chat(history)),
            sampling=sampling,
            tenant_id="local",
        )
        async for output in engine.generate(request):
            parts.append(output.text_delta)
            out.write(output.text_delta)
            out.flush()
    except InvalidRequestError as e:
        out.write(f"\n(error: {e} -- /reset starts a new conversation)\n")
        return None
    out.write("\n")
    return "".join(parts)


class _StdinLines:
    """Lines of a blocking text stream, read by a daemon thread (so Ctrl-C never waits on it)."""

    def __init__(self, stream: TextIO) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)

    async def next(self) -> str | None:
        """The next line, or None at end of input."""
        return await self._queue.get()


def _err(message: str) -> None:
    print(f"[tenantserve] {message}", file=sys.stderr, flush=True)


def _fail(e: TenantServeError) -> NoReturn:
    _err(f"error: {e}")
    raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
