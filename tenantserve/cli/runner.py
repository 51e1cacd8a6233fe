"""What every admin command does around its one operation: settings from the environment
and flags, the admin (direct on the data dir, or the admin API with `--url`) opened and
closed, the result printed as JSON, and any failure as one line on stderr with the exit
code of its kind (2: bad input, 1: anything else). Direct mode records each change in the
audit log as `cli_actor()`."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from tenantserve.cli.admin_client import CommandError
from tenantserve.config import Settings
from tenantserve.errors import InvalidRequestError, NotFoundError, TenantServeError

Admin = TypeVar("Admin")

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        help="Data dir whose database (and artifacts) direct mode uses (default .tenantserve).",
        show_default=False,
    ),
]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="TENANTSERVE_URL",
        help="Go through the admin API of the server at this URL (http://host:port) "
        "instead of the database.",
        show_default=False,
    ),
]
AdminTokenOption = Annotated[
    str | None,
    typer.Option(
        "--admin-token",
        help="Bearer token of the admin API (default: TENANTSERVE_ADMIN_TOKEN, else the "
        "data dir's admin_token file). Only with --url.",
        show_default=False,
    ),
]


def run_admin_command(
    data_dir: Path | None,
    open_admin: Callable[[Settings], AbstractAsyncContextManager[Admin]],
    operation: Callable[[Admin], Awaitable[Any]],
    not_found_hint: str | None = None,
) -> None:
    """Run `operation` on the admin `open_admin` gives and print its JSON, or fail."""
    try:
        settings = Settings.from_env(data_dir=data_dir)
        result = asyncio.run(_with(open_admin(settings), operation))
    except CommandError as e:
        fail(e)
    except NotFoundError as e:
        hint = f"; {not_found_hint}" if not_found_hint else ""
        fail(CommandError(f"{e}{hint}", 1))
    except InvalidRequestError as e:
        fail(CommandError(str(e), 2))
    except TenantServeError as e:
        fail(CommandError(str(e), 1))
    print(json.dumps(result, indent=2))


async def _with(
    admin: AbstractAsyncContextManager[Admin], operation: Callable[[Admin], Awaitable[Any]]
) -> Any:
    async with admin as opened:
        return await operation(opened)


def cli_actor() -> str:
    """The audit actor of a direct-mode command: `cli:<OS user>`."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a bare container, say)
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def fail(e: CommandError) -> NoReturn:
    print(f"[tenantserve] error: {e}", file=sys.stderr, flush=True)
    raise typer.Exit(code=e.exit_code)


def log_to_stderr() -> None:
    """tenantserve's own loggers (the request log included) on stderr, at INFO."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("tenantserve")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
