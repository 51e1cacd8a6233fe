"""`tenantserve debug request REQUEST_ID`: the story of one request — tenant and tier,
admission decision and timing, queue wait, pool, adapter (and whether it had to load),
engine queue / prefill / TTFT / decode, status, the metered usage event and the operator
events about the tenant around then — with a verdict. The "my requests are slow"
walk-through (docs/operations.md).

Direct mode reads the data dir's database (records, usage events); operator events live
in the server's memory, so only `--url` (through `GET /admin/requests/{id}/debug`, which
the audit log records) shows them. Text by default, `--json` for the story's JSON.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from tenantserve.cli.admin_client import HTTP_TIMEOUT_S, CommandError, admin_token_for
from tenantserve.cli.runner import AdminTokenOption, DataDirOption, UrlOption, fail
from tenantserve.config import Settings
from tenantserve.observability.record_store import RequestRecordStore
from tenantserve.observability.request_story import build_story, render_story, usage_event_of
from tenantserve.storage.database import create_engine, database_url
from tenantserve.storage.migrations import migrate

debug_app = typer.Typer(
    name="debug", help="Investigate what happened to a request.", no_args_is_help=True
)


@debug_app.command("request")
def debug_request(
    request_id: Annotated[
        str, typer.Argument(metavar="REQUEST_ID", help="The request id (x-request-id, req_...).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the story as JSON.")] = False,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    admin_token: AdminTokenOption = None,
) -> None:
    """Print the whole story of one request and where its time (or refusal) came from."""
    settings = Settings.from_env(data_dir=data_dir)
    request_id = _bare_id(request_id)
    try:
        if url:
            story = _story_remote(settings, url, admin_token, request_id)
        else:
            story = asyncio.run(_story_direct(settings, request_id))
    except CommandError as e:
        fail(e)
    print(json.dumps(story, indent=2) if as_json else render_story(story))


def _bare_id(value: str) -> str:
    """A completion id (`chatcmpl-req_...`, `cmpl-req_...`) names its request id too."""
    value = value.strip()
    for prefix in ("chatcmpl-", "cmpl-"):
        if value.startswith(prefix):
            return value.removeprefix(prefix)
    return value


async def _story_direct(settings: Settings, request_id: str) -> dict[str, Any]:
    url = database_url(settings)
    await migrate(url)
    engine = create_engine(url)
    try:
        record = await RequestRecordStore(engine).get(request_id)
        if record is None:
            raise CommandError(
                f"no request record {request_id!r} in {settings.data_dir} (records are kept "
                f"{settings.records.retention_days:g} days; a just-finished request takes a "
                "moment to be written)"
            )
        return build_story(record, await usage_event_of(engine, request_id), None)
    finally:
        await engine.dispose()


def _story_remote(
    settings: Settings, url: str, admin_token: str | None, request_id: str
) -> dict[str, Any]:
    import httpx

    token = admin_token_for(settings, admin_token)
    target = f"{url.rstrip('/').removesuffix('/v1')}/admin/requests/{request_id}/debug"
    try:
        r = httpx.get(target, headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as e:
        raise CommandError(f"cannot reach {url}: {e}; is `tenantserve up` running there?") from e
    if r.status_code == 404:
        raise CommandError(f"no request record {request_id!r} on {url}")
    if r.status_code != 200:
        raise CommandError(f"{r.status_code}: {r.text}", 2 if r.status_code < 500 else 1)
    body: dict[str, Any] = r.json()
    return body
