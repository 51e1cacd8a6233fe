"""Fuzzing a real server over loopback: never a 5xx, never a hang, every 4xx in OpenAI's
error shape.

- schemathesis against the app's own OpenAPI document (`/openapi.json`): every operation,
  schema-conforming and schema-violating path and query parameters, as a tenant on `/v1`
  and as the operator on `/admin`;
- hypothesis-made JSON bodies against the completions routes (plain Starlette routes,
  absent from the OpenAPI document): valid requests with up to three fields made wild
  (NaN and infinities, integers past 64 bits, wrong types, nesting), stray keys, any JSON;
- arbitrary JSON against every other route that takes a body (the admin API's included).

Bounded: the cases are generated first (derandomized: the same cases on every run, no
shrinking), then sent a few at a time with a per-request timeout (an unanswered request
is a hang) until they are done or the test's time budget is spent (`BUDGET_S`, about a
minute for the module; the cases are interleaved so that a cut budget still reached
every operation).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain, zip_longest
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.e2e.test_security_matrix import RouteClass, classify, route_table
from tests.helpers.server import ADMIN_TOKEN, Running, add_tenant

pytestmark = pytest.mark.asyncio(loop_scope="module")

T = TypeVar("T")
REQUEST_TIMEOUT_S = 20.0  # a request unanswered by then is a hang
CONCURRENCY = 4
BUDGET_S = {"openapi": 25.0, "completions": 25.0, "bodies": 10.0}
EXAMPLES_PER_OPERATION = 10  # per generation mode (schema-conforming, schema-violating)
EXAMPLES_PER_COMPLETIONS_ROUTE = 400
EXAMPLES_PER_BODY_ROUTE = 8
MAX_OUTPUT_TOKENS = 2  # the fuzzing tenant's cap: valid requests finish fast
# 5xx that are not bugs: the test server has no payment provider configured.
ALLOWED_5XX = {("POST", "/admin/invoices/{invoice_id}/export/stripe"): "not_configured"}


def examples(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """Up to `count` values of `strategy`, the same ones on every run."""
    out: list[T] = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(value=strategy)
    def collect(value: T) -> None:
        out.append(value)

    collect()
    return out


def interleave(groups: Iterable[list[T]]) -> list[T]:
    """The first of each group, then the second of each, ..."""
    return [x for x in chain.from_iterable(zip_longest(*groups, fillvalue=None)) if x is not None]


@dataclass
class Findings:
    """What fuzzing found, and how much it ran."""

    budget_s: float
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    served: int = 0
    reached: set[str] = field(default_factory=set)  # route templates answered
    problems: list[str] = field(default_factory=list)

    @property
    def spent(self) -> bool:
        return time.monotonic() - self.started > self.budget_s

    def check(
        self, method: str, template: str, status: int, text: str, sent: Callable[[], str]
    ) -> None:
        """Record a 5xx, or a 4xx that is not OpenAI-shaped."""
        self.requests += 1
        self.reached.add(f"{method} {template}")
        if status < 400:
            self.served += 1
        elif status >= 500:
            if ALLOWED_5XX.get((method, template), "") != _code(text):
                self.problems.append(
                    f"{method} {template}: {status} {text[:300]} <- {sent()[:400]}"
                )
        elif not _openai_error(text):
            self.problems.append(f"{method} {template}: {status} not OpenAI-shaped {text[:300]}")

    def hang(self, method: str, template: str, e: Exception, sent: Callable[[], str]) -> None:
        self.requests += 1
        self.problems.append(
            f"{method} {template}: no answer ({type(e).__name__}) <- {sent()[:400]}"
        )

    def assert_clean(self) -> None:
        assert self.requests > 0
        assert not self.problems, "\n".join(self.problems[:40])


def _openai_error(text: str) -> bool:
    """Whether `text` is `{"error": {"message", "type", ...}}`."""
    try:
        error = json.loads(text)["error"]
        return isinstance(error["message"], str) and isinstance(error["type"], str)
    except (ValueError, KeyError, TypeError):
        return False


def _code(text: str) -> str | None:
    return json.loads(text)["error"].get("code") if _openai_error(text) else None


async def send_all(
    items: list[T], send: Callable[[T], Awaitable[None]], findings: Findings
) -> None:
    """`send` each item, CONCURRENCY at a time, in order, until done or the budget is spent
    (counted from here: generating the cases on a cold machine may take long)."""
    findings.started = time.monotonic()
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            if findings.spent:
                return
            await send(item)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


@dataclass(frozen=True)
class Fuzzed:
    running: Running
    key: str  # a tenant with limits that keep fuzzing fast and unthrottled


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fuzzed(running: Running) -> Fuzzed:
    tenant = await add_tenant(running.tenancy, "fuzz-co")
    limits = {
        "requests_per_minute": 1_000_000,
        "tokens_per_minute": 100_000_000,
        "max_concurrent": 1_000,
        "max_output_tokens": MAX_OUTPUT_TOKENS,
    }
    async with running.admin() as admin:
        r = await admin.patch(f"/admin/tenants/{tenant.id}", json={"limits": limits})
        assert r.status_code == 200, r.text
    return Fuzzed(running, tenant.key)


def _credential(fuzzed: Fuzzed, path: str) -> dict[str, str]:
    cls = classify(path)
    if cls is RouteClass.ADMIN:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if cls is RouteClass.TENANT:
        return {"Authorization": f"Bearer {fuzzed.key}"}
    return {}


async def test_the_openapi_operations_never_answer_5xx_or_hang(fuzzed: Fuzzed) -> None:
    run = fuzzed.running
    async with run.http(key="") as http:
        spec = (await http.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40  # the whole API, not an empty document
    findings = Findings(BUDGET_S["openapi"])

    def cases(operation: Any) -> list[Any]:
        out = []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                out += examples(operation.as_strategy(generation_mode=mode), EXAMPLES_PER_OPERATION)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing in it to get wrong
        return out

    def call(case: Any) -> None:
        operation = case.operation
        method, template = operation.method.upper(), operation.path
        headers = _credential(fuzzed, template)

        def sent() -> str:
            return str(case.as_curl_command(headers=headers))

        try:
            r = case.call(base_url=run.url, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except Exception as e:  # requests' timeouts and connection errors
            findings.hang(method, template, e, sent)
            return
        findings.check(method, template, r.status_code, r.text, sent)

    generated = interleave([cases(op) for op in operations])
    await send_all(generated, lambda case: asyncio.to_thread(call, case), findings)
    findings.assert_clean()
    assert len(findings.reached) == len(operations)


# -- completions bodies -------------------------------------------------------------------

# Wild values: every JSON type, NaN and infinities, integers past 64 bits.
_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-1.0, 2.5, 1e308, -0.0, 5e-324, math.nan, math.inf, -math.inf]),
)
_INTS = st.one_of(
    st.integers(min_value=-3, max_value=20),
    st.sampled_from([0, 2**31, 2**63, 2**64 + 1, 10**12, 10**30, -(2**63) - 1]),
)
_TEXT = st.text(max_size=40)
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, _FLOATS, st.text(max_size=20))
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_STOPS = st.one_of(
    st.text(min_size=1, max_size=5), st.lists(st.text(min_size=1, max_size=5), max_size=4)
)
_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant"]),
        "content": st.one_of(
            _TEXT,
            st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _TEXT}), max_size=3),
        ),
    }
)
_WILD_MESSAGE = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["tool", "function", ""]), _SCALARS), "content": _JSON},
    optional={"name": _JSON, "tool_calls": _JSON},
)


@dataclass(frozen=True)
class Field:
    """One request field: values OpenAI's API accepts, and values it must refuse (or
    survive)."""

    valid: st.SearchStrategy[Any]
    wild: st.SearchStrategy[Any]


def _sampling_fields(model: str) -> dict[str, Field]:
    return {
        "max_tokens": Field(st.integers(1, MAX_OUTPUT_TOKENS), _INTS),
        "temperature": Field(st.floats(0, 2), _FLOATS),
        "top_p": Field(st.floats(0.01, 1), _FLOATS),
        "top_k": Field(st.integers(0, 50), _INTS),
        "seed": Field(st.integers(0, 2**32), _INTS),
        "stop": Field(_STOPS, st.lists(st.one_of(st.just(""), _SCALARS), max_size=6)),
        "n": Field(st.just(1), _INTS),
        "stream": Field(st.booleans(), _SCALARS),
        "stream_options": Field(st.fixed_dictionaries({"include_usage": st.booleans()}), _JSON),
        "user": Field(st.text(max_size=10), _JSON),
        "logprobs": Field(st.just(False), _SCALARS),
        "model": Field(st.just(model), st.one_of(_TEXT, st.just(f"{model}@9.9.9"), _SCALARS)),
    }


def _body(required: dict[str, Field], optional: dict[str, Field]) -> st.SearchStrategy[Any]:
    """A valid request with up to three fields made wild (or dropped), a stray key or two;
    now and then any JSON at all."""
    fields = {**required, **optional}
    valid = st.fixed_dictionaries(
        {k: f.valid for k, f in required.items()},
        optional={k: f.valid for k, f in optional.items()},
    )
    wild = st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True).flatmap(
        lambda names: st.fixed_dictionaries(
            {n: st.one_of(fields[n].wild, st.just(_ABSENT)) for n in names}
        )
    )
    stray = st.dictionaries(st.text(max_size=6), _JSON, max_size=2)

    def combine(body: dict[str, Any], changes: dict[str, Any], extra: dict[str, Any]) -> Any:
        merged = {**extra, **body, **changes}
        return {k: v for k, v in merged.items() if v is not _ABSENT}

    requests = st.builds(combine, valid, wild, stray)
    return st.one_of(requests, requests, requests, requests, _JSON)


_ABSENT = object()


def _completion_bodies(model: str) -> dict[str, st.SearchStrategy[Any]]:
    sampling = _sampling_fields(model)
    model_field = {"model": sampling.pop("model")}
    chat = {
        "messages": Field(
            st.lists(_MESSAGE, min_size=1, max_size=3),
            st.one_of(st.lists(_WILD_MESSAGE, max_size=3), _JSON),
        )
    }
    prompt = {
        "prompt": Field(
            st.one_of(
                st.text(min_size=1, max_size=40),
                st.lists(st.integers(0, 49151), min_size=1, max_size=8),
                st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=1),
            ),
            st.one_of(
                st.just(""),
                st.lists(_INTS, max_size=6),
                st.lists(_TEXT, max_size=3),
                _JSON,
            ),
        )
    }
    return {
        "/v1/chat/completions": _body(
            {**model_field, **chat},
            {
                **sampling,
                "max_completion_tokens": Field(st.integers(1, MAX_OUTPUT_TOKENS), _INTS),
                "tools": Field(st.just([]), st.lists(_JSON, min_size=1, max_size=2)),
            },
        ),
        "/v1/completions": _body(
            {**model_field, **prompt},
            {
                **sampling,
                "echo": Field(st.just(False), _SCALARS),
                "suffix": Field(st.none(), _JSON),
            },
        ),
    }


def _encode(body: Any) -> bytes:
    """JSON as Python writes it: NaN and Infinity as bare words, as some clients send."""
    return json.dumps(body, allow_nan=True).encode()


async def _post_all(
    http: httpx.AsyncClient,
    targets: list[tuple[str, str, str, list[Any]]],
    findings: Findings,
    on_response: Callable[[httpx.Response], None] | None = None,
) -> None:
    """Send each (method, route template, path, bodies) of `targets`, interleaved."""
    items = interleave([[(m, t, p, b) for b in bodies] for m, t, p, bodies in targets])

    async def send(item: tuple[str, str, str, Any]) -> None:
        method, template, path, body = item
        raw = _encode(body)
        try:
            r = await http.request(
                method, path, content=raw, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as e:
            findings.hang(method, template, e, raw.decode)
            return
        findings.check(method, template, r.status_code, r.text, raw.decode)
        if on_response is not None:
            on_response(r)

    await send_all(items, send, findings)


async def test_fuzzed_completion_bodies_get_an_answer_or_an_openai_4xx(fuzzed: Fuzzed) -> None:
    run = fuzzed.running
    findings = Findings(BUDGET_S["completions"])

    def answered(r: httpx.Response) -> None:
        if r.status_code != 200:
            return
        if r.headers["content-type"].startswith("text/event-stream"):
            assert r.text.rstrip().endswith("data: [DONE]"), r.text[-200:]
        else:
            assert r.json()["usage"]["completion_tokens"] <= MAX_OUTPUT_TOKENS

    targets = [
        ("POST", path, path, examples(bodies, EXAMPLES_PER_COMPLETIONS_ROUTE))
        for path, bodies in _completion_bodies(run.model).items()
    ]
    async with run.http(key=fuzzed.key, timeout=REQUEST_TIMEOUT_S) as http:
        await _post_all(http, targets, findings, answered)
        findings.assert_clean()
        assert findings.served >= 20, "few fuzzed bodies were valid: the strategies drifted"
        # The engine is still healthy afterwards.
        body = {"model": run.model, "prompt": "Hello", "max_tokens": 2}
        assert (await http.post("/v1/completions", json=body)).status_code == 200


async def test_any_json_to_any_write_route_is_never_a_5xx(fuzzed: Fuzzed) -> None:
    run = fuzzed.running
    findings = Findings(BUDGET_S["bodies"])
    # Ids that exist and ones that do not: never a 5xx either way.
    ids = {"tenant_id": run.globex.id, "invoice_id": "inv_000", "key_id": "k", "name": "n"}
    completions = set(_completion_bodies(""))
    writes = [
        e
        for e in route_table(run.service.app)
        if e.method in ("POST", "PATCH", "PUT") and e.path not in completions
    ]
    bodies = examples(_JSON, EXAMPLES_PER_BODY_ROUTE)
    for cls in (RouteClass.ADMIN, RouteClass.TENANT):
        headers = _credential(fuzzed, "/admin/" if cls is RouteClass.ADMIN else "/v1/")
        targets = [
            (
                e.method,
                e.path,
                re.sub(r"{(\w+)(?::\w+)?}", lambda m: ids.get(m[1], "x"), e.path),
                bodies,
            )
            for e in writes
            if e.cls is cls
        ]
        async with httpx.AsyncClient(
            base_url=run.url, headers=headers, timeout=REQUEST_TIMEOUT_S
        ) as http:
            await _post_all(http, targets, findings)
    findings.assert_clean()
