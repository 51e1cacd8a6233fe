"""`tenantserve eval run|results` and `eval set upload|list`: golden sets and their scores.

Each command prints the admin API's JSON on stdout (`registry/eval_views.py`). With `--url`
(or TENANTSERVE_URL) it goes through the admin API of that server, which runs the set in
process through the pool serving the version (its engine, or its upstream server). Without
it, it works on the data dir's database directly and `run` loads the version into an
engine of its own (pulled from the artifact store, digest-verified), greedy, as the server's
engine would run it. Errors are one line on stderr: exit code 2 for bad input, 1 otherwise.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from tenantserve.cli.admin_client import (
    CommandError,
    _error_from_response,
    admin_token_for,
    normalize_url,
)
from tenantserve.cli.runner import AdminTokenOption, DataDirOption, UrlOption, run_admin_command
from tenantserve.config import Settings

if TYPE_CHECKING:
    import httpx

    from tenantserve.bootstrap import Tenancy
    from tenantserve.registry.eval_service import EvalService

JsonObject = dict[str, Any]
# An eval run on a CPU may take minutes.
RUN_TIMEOUT_S = 1800.0

eval_app = typer.Typer(
    name="eval",
    help="Golden-set evals of model versions: upload sets, run them, read the scores.",
    no_args_is_help=True,
)
set_app = typer.Typer(name="set", help="Eval sets attached to models.", no_args_is_help=True)
eval_app.add_typer(set_app)

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="NAME (the version its requests get) or NAME@VERSION; default: the built-in "
        "engine's model.",
        show_default=False,
    ),
]


class EvalAdmin(Protocol):
    """Eval administration; every result is the admin API's JSON."""

    async def upload(self, model: str, eval_set: JsonObject) -> JsonObject: ...

    async def list_sets(self, model: str | None) -> JsonObject: ...

    async def run(self, model: str) -> JsonObject: ...

    async def results(self, model: str) -> JsonObject: ...


class DirectEvalAdmin:
    """`EvalAdmin` on the data dir's database, runs on an engine of this process."""

    def __init__(self, tenancy: Tenancy, evals: EvalService, settings: Settings) -> None:
        self._tenancy = tenancy
        self._evals = evals
        self._settings = settings

    async def upload(self, model: str, eval_set: JsonObject) -> JsonObject:
        from tenantserve.registry.eval_views import eval_set_json

        return eval_set_json(await self._evals.put_model_set(model, eval_set))

    async def list_sets(self, model: str | None) -> JsonObject:
        from tenantserve.registry.eval_views import eval_set_json

        found = await self._evals.model_sets(model)
        return {"object": "list", "data": [eval_set_json(s) for s in found]}

    async def run(self, model: str) -> JsonObject:
        from tenantserve.engine.client import AsyncEngineClient
        from tenantserve.engine.tokenizer import Tokenizer
        from tenantserve.registry.artifact_cache import ArtifactCache
        from tenantserve.registry.eval_runner import EngineCompleter
        from tenantserve.registry.eval_views import eval_run_json
        from tenantserve.registry.model_smoke import smoke_engine_config

        version = await self._evals.version_of(model)
        sets = await self._evals.required_sets(version)
        cache = ArtifactCache(self._tenancy.registry.store, self._settings.data_dir / "cache")
        model_dir = await cache.pull(version)
        engine = AsyncEngineClient(smoke_engine_config(model_dir))
        try:
            await engine.start()
            completer = EngineCompleter(engine, Tokenizer(model_dir))
            return eval_run_json(await self._evals.run_with(version.ref, sets, completer))
        finally:
            await engine.shutdown()

    async def results(self, model: str) -> JsonObject:
        from tenantserve.registry.eval_views import eval_result_json

        found = await self._evals.results(model)
        return {"object": "list", "data": [eval_result_json(r) for r in found]}


class HttpEvalAdmin:
    """`EvalAdmin` over a running server's admin API (`/admin/evals...`)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def upload(self, model: str, eval_set: JsonObject) -> JsonObject:
        return await self._call("POST", "/admin/evals/sets", {"model": model, "set": eval_set})

    async def list_sets(self, model: str | None) -> JsonObject:
        return await self._call(
            "GET", "/admin/evals/sets", params={"model": model} if model else None
        )

    async def run(self, model: str) -> JsonObject:
        return await self._call("POST", "/admin/evals/run", {"model": model})

    async def results(self, model: str) -> JsonObject:
        return await self._call("GET", "/admin/evals/results", params={"model": model})

    async def _call(
        self,
        method: str,
        path: str,
        body: JsonObject | None = None,
        params: dict[str, str] | None = None,
    ) -> JsonObject:
        import httpx

        base = str(self._http.base_url).rstrip("/")
        try:
            response = await self._http.request(method, path, json=body, params=params)
        except httpx.TransportError as e:
            raise CommandError(
                f"cannot reach tenantserve at {base} ({type(e).__name__}: {e}); "
                "start it with `tenantserve up` or check --url / TENANTSERVE_URL"
            ) from e
        if not response.is_success:
            raise _error_from_response(method, path, base, response)
        data = response.json()
        if not isinstance(data, dict):
            raise CommandError(f"unexpected answer from the admin API: {data!r:.200}")
        return data


@eval_app.command("run")
def eval_run(
    model: ModelOption = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Run every eval set of MODEL's version and store the scores; prints the results and
    the gate's verdict (a regression is also an `eval_regression` operator event)."""
    _run(data_dir, url, admin_token, lambda admin, s: admin.run(_model(model, s)))


@eval_app.command("results")
def eval_results(
    model: ModelOption = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print MODEL's (or one version's) stored scores, newest first."""
    _run(data_dir, url, admin_token, lambda admin, s: admin.results(_model(model, s)))


@set_app.command("upload")
def eval_set_upload(
    file: Annotated[Path, typer.Argument(help="The eval set as JSON (see registry/evals.py).")],
    model: Annotated[
        str, typer.Option(help="Attach to NAME (every version) or NAME@VERSION (that one).")
    ],
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Attach the set in FILE to MODEL (replacing its set of the same name)."""
    try:
        eval_set = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise typer.BadParameter(f"cannot read {file} as JSON: {e}") from e
    _run(data_dir, url, admin_token, lambda admin, _: admin.upload(model, eval_set))


@set_app.command("list")
def eval_set_list(
    model: Annotated[str | None, typer.Option(help="Only this model's sets.")] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print the eval sets attached to models (and their versions)."""
    _run(data_dir, url, admin_token, lambda admin, _: admin.list_sets(model))


def _model(model: str | None, settings: Settings) -> str:
    from tenantserve.bootstrap import registry_name

    return model or registry_name(settings)


def _run(
    data_dir: Path | None,
    url: str | None,
    admin_token: str | None,
    operation: Callable[[EvalAdmin, Settings], Awaitable[Any]],
) -> None:
    holder: dict[str, Settings] = {}

    def open_admin(settings: Settings) -> Any:
        holder["settings"] = settings
        return open_eval_admin(settings, url, admin_token)

    run_admin_command(data_dir, open_admin, lambda admin: operation(admin, holder["settings"]))


@asynccontextmanager
async def open_eval_admin(
    settings: Settings, url: str | None, admin_token: str | None
) -> AsyncIterator[EvalAdmin]:
    """The admin API at `url` when given, else the data dir's database directly."""
    if url is not None:
        import httpx

        headers = {"Authorization": f"Bearer {admin_token_for(settings, admin_token)}"}
        async with httpx.AsyncClient(
            base_url=normalize_url(url), headers=headers, timeout=RUN_TIMEOUT_S
        ) as http:
            yield HttpEvalAdmin(http)
        return
    if admin_token is not None:
        raise CommandError("--admin-token only applies with --url", exit_code=2)
    from tenantserve.bootstrap import open_tenancy
    from tenantserve.registry.eval_gate import EvalGateConfig
    from tenantserve.registry.eval_service import EvalService
    from tenantserve.registry.unit_of_work import RegistryUnitOfWork

    tenancy = await open_tenancy(settings)
    try:
        evals = EvalService(
            lambda: RegistryUnitOfWork(tenancy.db.sessionmaker),
            tenancy.registry,
            lambda ref, lora: None,  # `run` brings its own engine
            gate=EvalGateConfig(**asdict(settings.evals)),
        )
        yield DirectEvalAdmin(tenancy, evals, settings)
    finally:
        await tenancy.db.dispose()
