"""The authorization matrix: every HTTP route of the app × every kind of credential, each
cell with its asserted status, over a real server.

The rows are generated from the app's own route table (`app.routes` plus the completions
fast path, `GatewayApp.fast_routes`), so a route added tomorrow is in the matrix without
anyone touching this file; a route the classifier does not know (neither public, nor
`/v1`, nor `/admin`), or a path parameter it has no id for, fails the test until it is
added here. Expectations are per class of route; `EXCEPTIONS` lists the few cells that
differ, with the reason.

    cell             public   tenant route (/v1)                   admin route (/admin)
    no credentials   200      401                                  401
    malformed        200      401 (each of MALFORMED)              401
    revoked key      200      401 (the owner's own, revoked)       401
    expired JWT      200      401                                  401
    wrong audience   200      401                                  401
    admin token      200      401 (not a tenant credential)        served
    other tenant     200      404 for the owner's ids (never 403,  401
                              never the data); its own view else
    owner JWT        200      served                               401
    owner key        200      served                               401 (a tenant key)

"Served" on a tenant route is 2xx for a GET, and for a write anything but 401 / 403 / 404
/ 5xx (the matrix sends writes no body, so most answer 400: authorized, then refused for
the body), a 404 allowed below an owned id (a sub-resource not made yet); another tenant's
write may be refused for its body (400) before the id is looked up, never served. On an
admin route "served" is anything but 401 / 403 / 5xx (a 400 for a missing body or
parameter, a 404 for a rollout that is not running, are the token accepted). "Its own
view" is served with nothing of the owner's in it (the owner's tenant id, invoice id,
request id, adapter id).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from tenantserve.billing.period import BillingPeriod
from tenantserve.bootstrap import registry_name
from tests.helpers.lora import write_random_adapter
from tests.helpers.server import ADMIN_TOKEN, JWT_SECRET, Running

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Paths served to anyone (the OpenAPI document and its viewers included).
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
# The console's pages are shells without data (their scripts call the API with the
# signed-in credential): public, like its static files (`/console/static`, a mount).
CONSOLE = "/console"
# Paths outside /admin that are the operator's all the same.
ADMIN_PATHS = frozenset({"/metrics"})
ADAPTER = "matrix-secret-bot"  # acme's adapter: a model name only acme can use
MALFORMED: tuple[str | bytes, ...] = (
    "Bearer",
    "Token ts-a-b",
    "Bearer x y",
    "Basic dXNlcjpwYXNz",
    "ts-a-b",  # a key without the scheme
    "Bearer ts-\u00e9l\u00e8ve-secret".encode(),  # not ASCII (sent as UTF-8 bytes)
    "Bearer " + "x" * 10_240,
    "Bearer ts-" + "a" * 10_240 + "-b",
)


class RouteClass(Enum):
    PUBLIC = "public"
    TENANT = "tenant"
    ADMIN = "admin"


class Cell(Enum):
    NONE = "no credentials"
    MALFORMED = "malformed"
    REVOKED = "revoked key"
    EXPIRED_JWT = "expired JWT"
    WRONG_AUDIENCE = "wrong audience"
    ADMIN_TOKEN = "admin token"
    OTHER_TENANT = "other tenant's key"
    OWNER_JWT = "owner's JWT"
    OWNER_KEY = "owner's key"


class Expect(Enum):
    OK = "200"
    UNAUTHENTICATED = "401 invalid_api_key"
    NOT_FOUND = "404"
    SERVED = "served"  # 2xx for a GET; a write: not 401/403/404, not 5xx
    AUTHORIZED = "authorized"  # the admin token accepted: not 401/403, not 5xx
    OWN_VIEW = "its own view"  # served, and nothing of the owner's in it


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # the route's template: /v1/adapters/{name}
    cls: RouteClass

    @property
    def params(self) -> list[str]:
        return re.findall(r"{(\w+)(?::\w+)?}", self.path)

    @property
    def is_sub_resource(self) -> bool:
        """A fixed path below a path parameter: `/v1/adapters/{name}/eval-set`."""
        return bool(self.params) and not self.path.endswith("}")

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def classify(path: str) -> RouteClass | None:
    """The class of a route by its path; None for a path this matrix does not know."""
    if path in PUBLIC_PATHS or path == CONSOLE or path.startswith(f"{CONSOLE}/"):
        return RouteClass.PUBLIC
    if path in ADMIN_PATHS or path == "/admin" or path.startswith("/admin/"):
        return RouteClass.ADMIN
    if path.startswith("/v1/"):
        return RouteClass.TENANT
    return None


def route_table(app: FastAPI) -> list[Endpoint]:
    """Every (method, path) the app answers, classified; AssertionError naming the routes
    the matrix does not know."""
    found: dict[tuple[str, str], Endpoint] = {}
    unknown: list[str] = []
    fast_routes: dict[str, Any] = getattr(app, "fast_routes", {})
    pairs: list[tuple[str, str]] = [("POST", path) for path in fast_routes]
    for route in app.routes:
        if isinstance(route, Mount) and route.path == f"{CONSOLE}/static":
            continue  # static files: public
        if not isinstance(route, APIRoute | Route):
            unknown.append(f"{type(route).__name__} {getattr(route, 'path', route)!r}")
            continue
        pairs += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    for method, path in pairs:
        cls = classify(path)
        if cls is None:
            unknown.append(f"{method} {path}")
        else:
            found[method, path] = Endpoint(method, path, cls)
    assert not unknown, (
        f"routes the security matrix does not know: {unknown}; add them to "
        "tests/e2e/test_security_matrix.py (PUBLIC_PATHS, ADMIN_PATHS or classify)"
    )
    # Deletions last: the cells before them still find what they would delete.
    return sorted(found.values(), key=lambda e: (e.method == "DELETE", e.path, e.method))


@dataclass(frozen=True)
class Owned:
    """The server, and what acme owns there: every path parameter a route may name."""

    running: Running
    revoked_key: str
    tenant_ids: dict[str, str]  # path parameter -> acme's id, on /v1 routes
    admin_ids: dict[str, str]  # path parameter -> an existing id, on /admin routes
    # What another tenant must never see: acme's ids it was never told (the adapter's
    # name is not one: the other tenant sends it, and its own records may show it).
    secrets_of_acme: tuple[str, ...]


def _jwt(tenant_id: str, exp_offset_s: float, audience: str = "tenantserve") -> str:
    claims = {"tenant_id": tenant_id, "aud": audience, "exp": int(time.time() + exp_offset_s)}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def owned(running: Running, tmp_path_factory: pytest.TempPathFactory) -> Owned:
    """acme with an adapter, an invoice, a finished request and a revoked second key; an
    extra key for the admin route that revokes one."""
    model_dir = running.service.settings.model_dir
    assert model_dir is not None
    adapter_dir = write_random_adapter(
        model_dir, tmp_path_factory.mktemp("adapter"), 4, ["q_proj", "v_proj"], seed=7
    )
    files = {
        n: (n, (adapter_dir / n).read_bytes())
        for n in ("adapter_config.json", "adapter_model.safetensors")
    }
    base = f"{registry_name(running.service.settings)}@1.0.0"
    async with running.http() as acme:
        r = await acme.post("/v1/adapters", data={"name": ADAPTER, "base_model": base}, files=files)
        assert r.status_code == 201 and r.json()["status"] == "ready", r.text
        adapter_id = r.json()["id"]
        body = {"model": ADAPTER, "prompt": "Hello", "max_tokens": 1}
        r = await acme.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        request_id = r.headers["x-request-id"]
    spare = await running.tenancy.create_key(running.acme.id)
    revoked_key = await running.tenancy.create_key(running.acme.id)
    period = str(BillingPeriod.containing(datetime.now(UTC)))
    async with running.admin() as admin:
        r = await admin.delete(f"/admin/keys/{revoked_key.key.id}")
        assert r.status_code == 200, r.text
        r = await admin.post(
            "/admin/invoices/generate", json={"period": period, "tenant_id": running.acme.id}
        )
        assert r.status_code == 200, r.text
        [invoice] = r.json()["data"]
    invoice_id = invoice["id"]
    tenant_ids = {
        "model_id": ADAPTER,
        "name": ADAPTER,
        "invoice_id": invoice_id,
        "request_id": request_id,
        "key_id": spare.key.id,
        "id": request_id,  # console pages: /console/requests/{id}
    }
    admin_ids = {
        "tenant_id": running.acme.id,
        "key_id": spare.key.id,
        "name": registry_name(running.service.settings),
        "model": registry_name(running.service.settings),
        "version": "1.0.0",
        "invoice_id": invoice_id,
        "request_id": request_id,
    }
    secrets = (running.acme.id, adapter_id, invoice_id, request_id)
    return Owned(running, revoked_key.plaintext, tenant_ids, admin_ids, secrets)


# Request bodies of routes whose owner cell needs one to be served; everything else is
# sent without a body.
def _bodies(model: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        ("POST", "/v1/chat/completions"): {
            "model": model,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1,
        },
        ("POST", "/v1/completions"): {"model": model, "prompt": "Hi", "max_tokens": 1},
    }


# Cells that differ from their class's rule, and why.
EXCEPTIONS: dict[tuple[str, str, Cell], tuple[int, ...]] = {
    # The test server has no payment provider configured: 503 not_configured, after the
    # token was accepted.
    ("POST", "/admin/invoices/{invoice_id}/export/stripe", Cell.ADMIN_TOKEN): (503,),
    # Keys are managed with an unscoped API key only: a JWT is refused (403 permission).
    ("GET", "/v1/keys", Cell.OWNER_JWT): (403,),
    ("POST", "/v1/keys", Cell.OWNER_JWT): (403,),
    ("DELETE", "/v1/keys/{key_id}", Cell.OWNER_JWT): (403,),
}


def expectation(endpoint: Endpoint, cell: Cell) -> Expect:
    """What `cell` must get from `endpoint`, by the endpoint's class."""
    if endpoint.cls is RouteClass.PUBLIC:
        return Expect.OK
    authorized = (
        cell is Cell.ADMIN_TOKEN
        if endpoint.cls is RouteClass.ADMIN
        else cell in (Cell.OWNER_JWT, Cell.OWNER_KEY, Cell.OTHER_TENANT)
    )
    if not authorized:
        return Expect.UNAUTHENTICATED
    if cell is Cell.OTHER_TENANT:
        owns = bool(endpoint.params) or (endpoint.method, endpoint.path) in _bodies("")
        return Expect.NOT_FOUND if owns else Expect.OWN_VIEW
    return Expect.AUTHORIZED if endpoint.cls is RouteClass.ADMIN else Expect.SERVED


def _headers(owned: Owned, cell: Cell) -> Iterator[dict[str, str | bytes]]:
    run = owned.running
    acme = run.acme.id
    if cell is Cell.NONE:
        yield {}
    elif cell is Cell.MALFORMED:
        yield from ({"Authorization": value} for value in MALFORMED)
    else:
        credential = {
            Cell.REVOKED: owned.revoked_key,
            Cell.EXPIRED_JWT: _jwt(acme, -60),
            Cell.WRONG_AUDIENCE: _jwt(acme, 300, audience="someone-else"),
            Cell.ADMIN_TOKEN: ADMIN_TOKEN,
            Cell.OTHER_TENANT: run.globex.key,
            Cell.OWNER_JWT: _jwt(acme, 300),
            Cell.OWNER_KEY: run.acme.key,
        }[cell]
        yield {"Authorization": f"Bearer {credential}"}


def _url(owned: Owned, endpoint: Endpoint) -> str:
    ids = owned.admin_ids if endpoint.cls is RouteClass.ADMIN else owned.tenant_ids
    missing = [p for p in endpoint.params if p not in ids]
    assert not missing, (
        f"{endpoint}: no id for the path parameter(s) {missing}; add an existing one of "
        "acme's to the `owned` fixture of tests/e2e/test_security_matrix.py"
    )
    return re.sub(r"{(\w+)(?::\w+)?}", lambda m: ids[m.group(1)], endpoint.path)


def _check(owned: Owned, endpoint: Endpoint, cell: Cell, response: httpx.Response) -> str | None:
    """Why `response` breaks the cell's rule; None when it keeps it."""
    status = response.status_code
    exception = EXCEPTIONS.get((endpoint.method, endpoint.path, cell))
    if exception is not None:
        return None if status in exception else f"{status}, expected {exception}"
    expect = expectation(endpoint, cell)
    if status >= 500:
        return f"{status} {response.text[:200]}"
    if expect is Expect.OK:
        return None if status == 200 else f"{status}, expected 200"
    if expect is Expect.UNAUTHENTICATED:
        code = _error_code(response)
        ok = status == 401 and code == "invalid_api_key"
        return None if ok else f"{status} {code}, expected 401 invalid_api_key"
    if expect is Expect.NOT_FOUND:
        # A write may refuse its (missing) body before looking the id up: a 400 that says
        # nothing of the owner's is no leak either.
        with_body = (endpoint.method, endpoint.path) in _bodies("")
        allowed = (404,) if endpoint.method == "GET" or with_body else (400, 404)
        sent = str(response.request.url) + response.request.content.decode()
        # An error may echo the id the caller sent; nothing else of the owner's.
        leaked = [s for s in owned.secrets_of_acme if s in response.text and s not in sent]
        ok = status in allowed and not leaked
        return None if ok else f"{status} {response.text[:200]}, expected {allowed}"
    if expect is Expect.AUTHORIZED:
        return (
            f"{status} {response.text[:200]}, expected it authorized"
            if status in (401, 403)
            else None
        )
    # Below an owned id (`/v1/adapters/{name}/eval-set`), the owner may find nothing yet.
    absent = {404} if endpoint.is_sub_resource else set()
    if status in {401, 403, 404} - absent or (
        endpoint.method == "GET" and not (200 <= status < 300 or status in absent)
    ):
        return f"{status} {response.text[:200]}, expected it served"
    if expect is Expect.OWN_VIEW:
        leaked = [s for s in owned.secrets_of_acme if s in response.text]
        return f"acme's {leaked} in another tenant's answer" if leaked else None
    return None


def _error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


async def test_every_route_answers_every_credential_as_its_class_requires(
    owned: Owned,
) -> None:
    run = owned.running
    endpoints = route_table(run.service.app)
    bodies = _bodies(ADAPTER)
    failures: list[str] = []
    cells = 0
    async with httpx.AsyncClient(base_url=run.url, timeout=60) as http:
        for endpoint in endpoints:
            url = _url(owned, endpoint)
            body = bodies.get((endpoint.method, endpoint.path))
            for cell in Cell:
                # A deletion succeeds once: the owner's key deletes; its JWT was shown
                # accepted on every other route.
                if endpoint.method == "DELETE" and cell is Cell.OWNER_JWT:
                    continue
                for headers in _headers(owned, cell):
                    r = await http.request(endpoint.method, url, json=body, headers=headers)
                    cells += 1
                    why = _check(owned, endpoint, cell, r)
                    if why is not None:
                        failures.append(f"{endpoint} [{cell.value}]: {why}")
    assert not failures, "\n".join(failures)
    # Every route of every class was in it, the completions fast path included.
    paths = {e.path for e in endpoints}
    assert {"/health", "/v1/completions", "/v1/chat/completions", "/admin/tenants"} <= paths
    assert cells >= len(endpoints) * len(Cell)


async def test_a_route_the_matrix_does_not_know_fails_it() -> None:
    app = FastAPI()

    async def endpoint() -> dict[str, str]:
        return {}

    app.add_api_route("/v1/things/{thing_id}", endpoint, methods=["GET"])
    app.add_api_route("/dashboard/tenants", endpoint, methods=["GET"])
    with pytest.raises(AssertionError, match="GET /dashboard/tenants"):
        route_table(app)
    app.router.routes = [r for r in app.router.routes if r.path != "/dashboard/tenants"]
    [thing] = [e for e in route_table(app) if e.cls is RouteClass.TENANT]
    assert str(thing) == "GET /v1/things/{thing_id}"
    # ... and a path parameter it has no id for fails it too.
    nothing = Owned(None, "", {}, {}, ())  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match=r"\['thing_id'\]"):
        _url(nothing, thing)
