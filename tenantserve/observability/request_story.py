"""The story of one request, for "my requests are slow" and "my requests get 429s":
its record, its usage event and the operator events about its tenant around it, laid
out along the request path with a verdict on where the time (or the refusal) came from.

    build_story(record, usage_event, events)   -> JSON (`GET /admin/requests/{id}/debug`)
    render_story(story)                        -> text (`tenantserve debug request ID`)
    usage_event_of(engine, request_id)         the metered event, from `usage_events`

Timeline of an admitted request on the built-in engine (the record's timings):
admission (policy, quotas, limiter, then the pool's fair queue) → the engine's own queue
(waiting for a batch seat, and for its adapter to load) → prefill until the first token
(TTFT is measured from engine arrival) → decode until the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantserve.metering.tables import usage_events
from tenantserve.observability.slo import DEFAULT_TARGETS
from tenantserve.tiers import Tier

# Operator events this long before the request started (and after it ended) are shown.
EVENTS_BEFORE_S = 600.0
EVENTS_AFTER_S = 60.0

REFUSALS = {
    "rate_limit_exceeded": "the tenant's own rate limit (RPM / TPM / concurrency) was reached",
    "quota_exceeded": "a hard quota of the tenant is spent until the period ends",
    "queue_full": "the tier's queue in the pool was full (the pool is saturated)",
    "overloaded": "the pool shed the request under overload (lowest tier first)",
    "limiter_unavailable": "the rate limiter's store was down and the tier fails closed",
    "model_not_found": "the model named is not in the tenant's catalog",
}


async def usage_event_of(engine: AsyncEngine, request_id: str) -> dict[str, Any] | None:
    """The request's metered usage event (None: not metered, or not yet)."""
    query = select(usage_events).where(usage_events.c.request_id == request_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    return out


def events_around(
    events: Sequence[Mapping[str, Any]], record: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The events created from EVENTS_BEFORE_S before the request to EVENTS_AFTER_S after."""
    t0 = datetime.fromisoformat(record["started_at"]).timestamp() - EVENTS_BEFORE_S
    t1 = datetime.fromisoformat(record["ended_at"]).timestamp() + EVENTS_AFTER_S
    return [dict(e) for e in events if t0 <= float(e["created_at"]) <= t1]


def build_story(
    record: Mapping[str, Any],
    usage_event: Mapping[str, Any] | None,
    events: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """The story's JSON; `events` None: the operator events are not available here."""
    timings = record["timings"]
    admission_ms, ttft_ms = timings["admission_ms"], timings["ttft_ms"]
    engine_queue_ms, total_ms = timings["engine_queue_ms"], timings["total_ms"]
    rejected = record["status"] == "rejected"
    prefill_ms = decode_ms = None
    if ttft_ms is not None:
        prefill_ms = max(0.0, ttft_ms - (engine_queue_ms or 0.0))
        decode_ms = max(0.0, total_ms - admission_ms - ttft_ms)
    wait_ms = timings["adapter_wait_ms"]
    adapter: dict[str, Any] = {"name": record["adapter"] or None}
    if record["adapter"]:
        adapter["load_wait_ms"] = wait_ms
        adapter["had_to_load"] = None if wait_ms is None else wait_ms > 0
    story: dict[str, Any] = {
        "object": "request.story",
        "request_id": record["id"],
        "tenant": {"id": record["tenant_id"], "tier": record["tier"]},
        "model": record["model"],
        "status": record["status"],
        "http_status": record["http_status"],
        "error_code": record["error_code"],
        "started_at": record["started_at"],
        "ended_at": record["ended_at"],
        "admission": {
            "decision": "rejected" if rejected else "admitted",
            "admission_ms": admission_ms,
            "queue_wait_ms": None if rejected else timings["queue_ms"],
        },
        "engine": None
        if rejected
        else {
            "pool": record["pool"],
            "region": record["region"],
            "replica": None,  # one engine process per pool: not tracked
            "adapter": adapter,
            "engine_queue_ms": engine_queue_ms,
            "ttft_ms": ttft_ms,
            "prefill_ms": _r(prefill_ms),
            "decode_ms": _r(decode_ms),
            "total_ms": total_ms,
            "preemptions": record["preemptions"],
            "engine_seconds": record["engine_seconds"],
        },
        "usage": record["usage"],
        "usage_event": dict(usage_event) if usage_event is not None else None,
        "operator_events": None if events is None else events_around(events, record),
    }
    story["verdict"] = _verdict(story, record)
    return story


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _verdict(story: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    out = []
    if record["status"] == "rejected":
        code = record["error_code"] or "?"
        why = REFUSALS.get(code, "refused at admission")
        out.append(f"refused with {record['http_status']} {code}: {why}")
    else:
        target = DEFAULT_TARGETS[Tier(record["tier"])].ttft_p95_s
        ttft = record["timings"]["ttft_ms"]
        if ttft is not None and target is not None:
            verb = "above" if ttft > target * 1000 else "within"
            out.append(f"TTFT {ttft:.0f} ms is {verb} the {record['tier']} target {target:g} s")
        engine = story["engine"]
        phases = {
            "admission checks": (record["timings"]["admission_ms"] or 0.0)
            - (record["timings"]["queue_ms"] or 0.0),
            "the pool's fair queue": record["timings"]["queue_ms"] or 0.0,
            "the engine queue (batch seat / adapter load)": engine["engine_queue_ms"] or 0.0,
            "prefill": engine["prefill_ms"] or 0.0,
            "decode": engine["decode_ms"] or 0.0,
        }
        name, ms = max(phases.items(), key=lambda kv: kv[1])
        total = record["timings"]["total_ms"]
        share = ms / total if total else 0.0
        out.append(f"most time in {name}: {ms:.0f} ms ({share:.0%} of {total:.0f} ms)")
        if engine["adapter"].get("had_to_load"):
            waited = engine["adapter"]["load_wait_ms"]
            out.append(f"its adapter was not resident and took {waited:.0f} ms to load")
        if record["preemptions"]:
            out.append(f"preempted {record['preemptions']} time(s) by higher-tier work")
        if record["status"] == "error":
            out.append("failed on our side (engine or upstream error): counts against availability")
    for event in story["operator_events"] or []:
        if event["kind"] == "noisy_neighbor":
            who = "this tenant" if event["tenant_id"] == record["tenant_id"] else "another tenant"
            out.append(f"noisy neighbour around then: {who} ({event['tenant_id']}) was demoted")
        elif event["kind"].startswith("slo_burn_rate"):
            out.append(f"SLO event around then: {event['kind']} {event['details']}")
    if story["usage_event"] is None and record["status"] != "rejected":
        out.append("no usage event metered yet (the pipeline may lag; see `usage reconcile`)")
    return out


def render_story(story: Mapping[str, Any]) -> str:
    """The story as text, one fact a line."""
    lines = [
        f"request   {story['request_id']}",
        f"tenant    {story['tenant']['id']} ({story['tenant']['tier']})",
        f"model     {story['model']}",
        f"status    {story['status']}"
        + (f" ({story['http_status']} {story['error_code']})" if story["http_status"] else ""),
        f"time      {story['started_at']} -> {story['ended_at']}",
        "",
        "admission",
        f"  decision        {story['admission']['decision']}",
        f"  admission       {_fmt(story['admission']['admission_ms'])}"
        "  (policy, quotas, rate limiter, fair queue)",
        f"  queue wait      {_fmt(story['admission']['queue_wait_ms'])}  (the pool's fair queue)",
    ]
    engine = story["engine"]
    if engine is not None:
        adapter = engine["adapter"]
        if adapter["name"] is None:
            adapter_line = "none (base model)"
        elif adapter.get("had_to_load") is None:
            adapter_line = f"{adapter['name']} (load: unknown)"
        else:
            loaded = "loaded" if adapter["had_to_load"] else "already resident"
            adapter_line = f"{adapter['name']} ({loaded}, waited {_fmt(adapter['load_wait_ms'])})"
        lines += [
            "",
            "engine",
            f"  pool            {engine['pool']} (region {engine['region']}; replica: not tracked)",
            f"  adapter         {adapter_line}",
            f"  engine queue    {_fmt(engine['engine_queue_ms'])}",
            f"  prefill         {_fmt(engine['prefill_ms'])}",
            f"  TTFT            {_fmt(engine['ttft_ms'])}  (engine arrival -> first token)",
            f"  decode          {_fmt(engine['decode_ms'])}",
            f"  total           {_fmt(engine['total_ms'])}  (admission start -> end)",
            f"  preemptions     {engine['preemptions']}",
            f"  engine time     {engine['engine_seconds']:.4f} s (this request's share of steps)",
        ]
    usage = story["usage"]
    lines += [
        "",
        f"tokens    prompt {usage['prompt_tokens']} (cached {usage['cached_tokens']}), "
        f"completion {usage['completion_tokens']}",
    ]
    event = story["usage_event"]
    if event is None:
        lines.append("usage     no usage event in the metering store")
    else:
        lines.append(
            f"usage     {event['event_id']} {event['status']}: in {event['input_tokens']} "
            f"(cached {event['cached_input_tokens']}), out {event['output_tokens']}, "
            f"engine {event['engine_seconds']:.4f} s, recorded {event['recorded_at']}"
        )
    events = story["operator_events"]
    if events is None:
        lines.append("events    not available in direct mode (pass --url to ask the server)")
    elif not events:
        lines.append("events    no operator events about this tenant around then")
    else:
        lines.append("events")
        for e in events:
            when = datetime.fromtimestamp(float(e["created_at"]), UTC).isoformat(timespec="seconds")
            lines.append(f"  {when} {e['kind']} {e['tenant_id']} {e['details']}")
    lines += ["", "verdict"] + [f"  - {v}" for v in story["verdict"]]
    return "\n".join(lines)


def _fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:8.1f} ms"
